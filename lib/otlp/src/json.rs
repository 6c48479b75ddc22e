//! OTLP/JSON into the prost types, by way of a parsed tree.
//!
//! OTLP/JSON is the proto3 JSON mapping, which writes a double as a number or
//! as a string, and NaN, Infinity and -Infinity only as strings. The serde
//! derives of opentelemetry-proto take numbers only (but for summary
//! quantiles), and they cannot be taught otherwise from outside: most doubles
//! sit inside `#[serde(flatten)]` oneofs, which serde buffers before it knows
//! their types. So the body is parsed into a [`Json`] tree first, and the tree
//! is handed to the derives by a deserializer that knows, from where a value
//! sits in the OTLP schema, which strings are doubles, and reads them as such.
//!
//! Errors name the JSON path of the value at fault (`resourceMetrics[0].…`);
//! a syntax error keeps serde_json's line and column.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// A JSON document as sent: object members in order and repeated keys kept, so
/// the derives see what serde_json would have shown them (and refuse a repeated
/// field as they do there). Keys and strings without escapes borrow from the body.
enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'de: 'a, 'a> de::Deserialize<'de> for Json<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Json<'a>, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

/// A key, borrowed from the body unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Key<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Key<'a>, D::Error> {
        match deserializer.deserialize_str(TreeVisitor)? {
            Json::String(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("an object key is not a string")),
        }
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json<'de>, E> {
        // serde_json never parses a non-finite number, so this cannot fail.
        serde_json::Number::from_f64(n).map(Json::Number).ok_or_else(|| E::custom("a JSON number is not finite"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((Key(key), value)) = map.next_entry()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

/// Where a value sits in the OTLP schema, as far as telling doubles apart needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Other,
    Double,
    /// `explicitBounds`
    Doubles,
    DataPoints,
    DataPoint,
    /// `quantileValues` of a summary point
    Quantiles,
    Quantile,
}

impl Role {
    /// The role of member `key` of an object of this role. Only strings in a
    /// double's place are read differently, and every one of these names is a
    /// double wherever OTLP uses it (a metric's `sum` object is not a point's).
    fn member(self, key: &str) -> Role {
        match (self, key) {
            (_, "asDouble" | "doubleValue") => Role::Double,
            (_, "dataPoints") => Role::DataPoints,
            (Role::DataPoint, "sum" | "min" | "max" | "zeroThreshold") => Role::Double,
            (Role::DataPoint, "explicitBounds") => Role::Doubles,
            (Role::DataPoint, "quantileValues") => Role::Quantiles,
            (Role::Quantile, "quantile" | "value") => Role::Double,
            _ => Role::Other,
        }
    }

    /// The role of the elements of an array of this role.
    fn element(self) -> Role {
        match self {
            Role::Doubles => Role::Double,
            Role::DataPoints => Role::DataPoint,
            Role::Quantiles => Role::Quantile,
            _ => Role::Other,
        }
    }
}

/// The JSON path to a value, for errors; built on the stack as the walk descends.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Member(&'p Path<'p>, &'p str),
    Element(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Member(Path::Root, key) => f.write_str(key),
            Path::Member(parent, key) => write!(f, "{parent}.{key}"),
            Path::Element(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Why a body is not an OTLP/JSON request: the message, and where in the document.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", at.as_deref().map(|at| format!("{at}: ")).unwrap_or_default())]
pub(crate) struct Error {
    at: Option<String>,
    message: String,
}

impl Error {
    /// Names where the error happened, unless a deeper value already did.
    fn at(mut self, path: &Path<'_>) -> Error {
        if self.at.is_none() && !matches!(path, Path::Root) {
            self.at = Some(path.to_string());
        }
        self
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error { at: None, message: message.to_string() }
    }
}

/// Decodes `body`, OTLP/JSON, as a `T`.
pub(crate) fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let tree: Json = serde_json::from_slice(body).map_err(|e| Error { at: None, message: e.to_string() })?;
    T::deserialize(Node { value: tree, path: Path::Root, role: Role::Other })
}

/// A double in a string, as the proto3 JSON mapping writes it: a JSON number
/// (in range), or one of the three values no JSON number can carry.
fn double(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        // Rust's own parser would also take "inf", "nan", "+1" and ".5"; serde_json takes
        // exactly the JSON number grammar, once surrounding whitespace is ruled out.
        _ if text.trim() != text => None,
        _ => serde_json::from_str::<f64>(text).ok(),
    }
}

/// A value of the tree, handed to a derive.
struct Node<'a, 'p> {
    value: Json<'a>,
    path: Path<'p>,
    role: Role,
}

impl<'de> de::Deserializer<'de> for Node<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let Node { value, path, role } = self;
        let result = match value {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(b),
            Json::Number(n) => visit_number(&n, visitor),
            Json::String(s) if role == Role::Double => match double(&s) {
                Some(d) => visitor.visit_f64(d),
                None => Err(de::Error::custom(format!(
                    "expected a double (a number, or a string holding one, NaN, Infinity or -Infinity), found {s:?}"
                ))),
            },
            Json::String(Cow::Borrowed(s)) => visitor.visit_str(s),
            Json::String(Cow::Owned(s)) => visitor.visit_string(s),
            Json::Array(items) => {
                visitor.visit_seq(Elements { items: items.into_iter().enumerate(), path: &path, role: role.element() })
            }
            Json::Object(members) => {
                visitor.visit_map(Members { members: members.into_iter(), next: None, path: &path, role })
            }
        };
        result.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Unknown fields are ignored, unread, as the OTLP/JSON spec asks.
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum identifier
    }
}

/// A number as serde_json's own deserializer presents it.
fn visit_number<'de, V: Visitor<'de>>(n: &serde_json::Number, visitor: V) -> Result<V::Value, Error> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

struct Elements<'p, I> {
    items: I,
    path: &'p Path<'p>,
    role: Role,
}

impl<'de, 'a, I: Iterator<Item = (usize, Json<'a>)> + ExactSizeIterator> SeqAccess<'de> for Elements<'_, I> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some((i, value)) = self.items.next() else { return Ok(None) };
        seed.deserialize(Node { value, path: Path::Element(self.path, i), role: self.role }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Members<'a, 'p> {
    members: std::vec::IntoIter<(Cow<'a, str>, Json<'a>)>,
    /// The member whose key was handed out and whose value comes next.
    next: Option<(Cow<'a, str>, Json<'a>)>,
    path: &'p Path<'p>,
    role: Role,
}

impl<'de> MapAccess<'de> for Members<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(member) = self.members.next() else { return Ok(None) };
        let key = seed.deserialize(member.0.as_ref().into_deserializer()).map_err(|e: Error| e.at(self.path))?;
        self.next = Some(member);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (key, value) = self.next.take().ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(Node { value, path: Path::Member(self.path, &key), role: self.role.member(&key) })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}
