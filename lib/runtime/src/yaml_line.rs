//! Finding the line of a node in a YAML document, for errors found after the
//! document parsed (a tier out of order, an unknown plan): serde_yaml keeps no
//! positions in what it returns, so the document is walked again with serde_yaml's
//! own parser and a sentinel error is raised at the node; its location is the line.
//! Works for block and flow style alike.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence element, from 0.
    Index(usize),
}

const FOUND: &str = "tally-yaml-line: node found";

/// The line (1-based) of the node at `path` in `text`: a key's own line for a
/// [`Step::Key`], the element's first line for a [`Step::Index`]. When the node is
/// missing, the line of its nearest ancestor that exists; `None` for the empty path
/// or a document that does not parse.
pub fn line_of(text: &str, path: &[Step<'_>]) -> Option<usize> {
    (1..=path.len()).rev().find_map(|len| exact_line(text, &path[..len]))
}

fn exact_line(text: &str, path: &[Step<'_>]) -> Option<usize> {
    match Node(path).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// Walks to the node at the end of its path.
struct Node<'p, 'a>(&'p [Step<'a>]);

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(key), rest)) = self.0.split_first() else { return skip_map(map) };
        while let Some(here) = map.next_key_seed(KeySeed { key, last: rest.is_empty() })? {
            if here {
                return map.next_value_seed(Node(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((&Step::Index(index), rest)) = self.0.split_first() else { return skip_seq(seq) };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() {
            // The element itself: fail inside its deserialization so the error takes its mark.
            seq.next_element_seed(Found)?;
            Ok(())
        } else {
            seq.next_element_seed(Node(rest)).map(|_| ())
        }
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads a key; `true` when it is the one sought. When it is the last step, the
/// sentinel error is raised here, at the key's own position.
struct KeySeed<'a> {
    key: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // Any scalar reads as its text; a non-scalar key is never the one sought.
        d.deserialize_str(self).or_else(|e: D::Error| if e.to_string().contains(FOUND) { Err(e) } else { Ok(false) })
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.key, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (here, _) => Ok(here),
        }
    }
}

/// Fails at whatever node it is given.
struct Found;

impl<'de> DeserializeSeed<'de> for Found {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::Step::{Index, Key};
    use super::*;

    const DOC: &str = "\
plans:
  basic:
    currency: USD
    meters:
      spans:
        tiers:
          - up_to: 100
            price: 1
          - {up_to: 50, price: 2}
          - price: 3
tenants: {acme: {plans: [{plan: basic, from: 2026-01-01}, {plan: gold, from: 2026-02-01}]}}
";

    #[test]
    fn finds_keys_and_elements_in_block_and_flow_style() {
        assert_eq!(line_of(DOC, &[Key("plans")]), Some(1));
        assert_eq!(line_of(DOC, &[Key("plans"), Key("basic"), Key("currency")]), Some(3));
        let tiers = [Key("plans"), Key("basic"), Key("meters"), Key("spans"), Key("tiers")];
        assert_eq!(line_of(DOC, &tiers), Some(6));
        assert_eq!(line_of(DOC, &[&tiers[..], &[Index(0)]].concat()), Some(7));
        assert_eq!(line_of(DOC, &[&tiers[..], &[Index(1)]].concat()), Some(9));
        assert_eq!(line_of(DOC, &[&tiers[..], &[Index(2), Key("price")]].concat()), Some(10));
        assert_eq!(line_of(DOC, &[Key("tenants"), Key("acme"), Key("plans"), Index(1), Key("plan")]), Some(11));
    }

    #[test]
    fn a_missing_node_falls_back_to_its_nearest_ancestor() {
        assert_eq!(line_of(DOC, &[Key("plans"), Key("basic"), Key("base_fee")]), Some(2));
        let tiers = [Key("plans"), Key("basic"), Key("meters"), Key("spans"), Key("tiers"), Index(7)];
        assert_eq!(line_of(DOC, &tiers), Some(6));
        assert_eq!(line_of(DOC, &[Key("regions")]), None);
        assert_eq!(line_of(DOC, &[]), None);
        // The parser reports keys as it meets them, so a key before a syntax error is still found.
        assert_eq!(line_of("plans: [unclosed", &[Key("plans")]), Some(1));
        assert_eq!(line_of("plans: [unclosed", &[Key("tenants")]), None);
    }
}
