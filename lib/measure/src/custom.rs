//! Custom meters: the operator's [`MeterDefinition`]s evaluated over an OTLP
//! request (any [`RequestView`]), as pure functions.
//!
//! For each item (span, log record, metric data point) of a meter's signal:
//! every `filter` attribute must equal its value; then `count` counts 1, `sum`
//! and `max` read the attribute as a number, and `unique_count` reads it as
//! text. Attributes are looked up on the item first, then on its resource; the
//! last of repeated keys wins (as in [`crate::attribute`]). On metric
//! points, `metric.name` is also the metric's name unless the point has such an
//! attribute, and a `sum`/`max` meter without `attribute` reads the value of
//! gauge and sum points (histogram and summary points have none and do not count).
//!
//! Values are exact decimals. An integer or a decimal string is taken as is (a
//! string with more than 9 decimals is refused rather than rounded); a double
//! is taken at its shortest decimal representation and rounded to the store's 9
//! decimals. A missing attribute means the item does not count for that meter;
//! a value that is not a number, is negative, NaN or infinite (or a unique
//! value over 1 KiB, which cutting would merge with others) refuses the item
//! for that meter, counted in the partial-success `rejected` with its reason.
//! An empty unique value does not count.

use std::collections::BTreeMap;

use metering::meter::{Aggregation, MeterDefinition, Signal};
use metering::record::{UsageRecord, MAX_DIMENSION_LEN, VALUE_SCALE};
use rust_decimal::{Decimal, RoundingStrategy};
use time::OffsetDateTime;

use otlp::view::{AnyValue, Attributes, MetricView, PointValue, RequestView};

/// The pseudo-attribute naming a metric point's metric.
pub const METRIC_NAME: &str = "metric.name";

/// What [`evaluate`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Evaluated {
    /// One record per tenant × service × meter × dimensions (× unique value).
    pub records: Vec<UsageRecord>,
    /// Items refused by at least one meter (a bad value).
    pub rejected: u64,
    /// Why, when `rejected` > 0 (the last reason).
    pub reason: String,
}

impl Evaluated {
    /// Appends these records and refusals to what the built-in meters measured.
    pub fn add_to(self, measured: &mut crate::Measured) {
        measured.records.extend(self.records);
        measured.rejected += self.rejected;
        if self.rejected > 0 {
            measured.reason = self.reason;
        }
    }
}

/// One item: its attributes, its resource's, and for metric points the
/// metric's name and the point's value.
struct Item<'a, A: ?Sized, R: ?Sized> {
    attrs: &'a A,
    resource: &'a R,
    metric: Option<&'a str>,
    point: Option<PointValue>,
}

impl<'a, A: Attributes + ?Sized, R: Attributes + ?Sized> Item<'a, A, R> {
    /// An attribute's value, or the metric name.
    fn find(&self, key: &str) -> Option<AnyValue<'a>> {
        if let Some(v) = self.attrs.get(key) {
            return Some(v);
        }
        if let Some(name) = self.metric.filter(|_| key == METRIC_NAME) {
            return Some(AnyValue::Str(name));
        }
        self.resource.get(key)
    }

    /// The attribute as text, when it is a scalar.
    fn text(&self, key: &str) -> Option<String> {
        match self.find(key)? {
            AnyValue::Str(s) => Some(s.to_owned()),
            AnyValue::Int(i) => Some(i.to_string()),
            AnyValue::Double(d) => Some(d.to_string()),
            AnyValue::Bool(b) => Some(b.to_string()),
            AnyValue::Bytes(_) | AnyValue::Other => None,
        }
    }
}

/// An item's number for a sum or max meter: `Ok(None)` when it has none.
fn number<A: Attributes + ?Sized, R: Attributes + ?Sized>(
    item: &Item<'_, A, R>,
    def: &MeterDefinition,
) -> Result<Option<Decimal>, String> {
    let value = match (&def.attribute, item.point) {
        (None, Some(PointValue::AsInt(i))) => Decimal::from(i),
        (None, Some(PointValue::AsDouble(d))) => double(d)?,
        (None, None) => return Ok(None),
        (Some(key), _) => match item.find(key) {
            None => return Ok(None),
            Some(AnyValue::Int(i)) => Decimal::from(i),
            Some(AnyValue::Double(d)) => double(d)?,
            Some(AnyValue::Str(s)) => {
                let d = Decimal::from_str_exact(s.trim()).map_err(|_| format!("{s:?} is not a decimal number"))?;
                if d.normalize().scale() > VALUE_SCALE {
                    return Err(format!("{s:?} has more than {VALUE_SCALE} decimal places"));
                }
                d
            }
            Some(_) => return Err("is not a number".into()),
        },
    };
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{value} is negative"));
    }
    Ok(Some(value))
}

/// A double at its shortest decimal representation, rounded to the store's scale.
fn double(d: f64) -> Result<Decimal, String> {
    if !d.is_finite() {
        return Err(format!("{d} is not a finite number"));
    }
    if d.abs() < 1e-10 {
        // Rounds to zero at 9 decimals; its full expansion has too many digits to parse.
        return Ok(Decimal::ZERO);
    }
    let exact = Decimal::from_str_exact(&d.to_string()).map_err(|_| format!("{d} is out of range"))?;
    Ok(exact.round_dp_with_strategy(VALUE_SCALE, RoundingStrategy::MidpointNearestEven))
}

/// What one item gives one meter.
enum Outcome {
    Skip,
    Value(Decimal, String),
    Bad(String),
}

fn outcome<A: Attributes + ?Sized, R: Attributes + ?Sized>(item: &Item<'_, A, R>, def: &MeterDefinition) -> Outcome {
    if !def.filter.iter().all(|(k, v)| item.text(k).as_deref() == Some(v.as_str())) {
        return Outcome::Skip;
    }
    let attribute = def.attribute.as_deref().unwrap_or("value");
    match def.aggregation {
        Aggregation::Count => Outcome::Value(Decimal::ONE, String::new()),
        Aggregation::Sum | Aggregation::Max => match number(item, def) {
            Ok(Some(v)) => Outcome::Value(v, String::new()),
            Ok(None) => Outcome::Skip,
            Err(why) => Outcome::Bad(format!("custom meter {}: {attribute} {why}", def.name)),
        },
        Aggregation::UniqueCount => match item.find(attribute) {
            None => Outcome::Skip,
            Some(_) => match item.text(attribute) {
                None => {
                    Outcome::Bad(format!("custom meter {}: {attribute} is not a string, number or boolean", def.name))
                }
                Some(s) if s.is_empty() => Outcome::Skip,
                Some(s) if s.len() > MAX_DIMENSION_LEN => Outcome::Bad(format!(
                    "custom meter {}: {attribute} is {} bytes long; the limit is {MAX_DIMENSION_LEN}",
                    def.name,
                    s.len()
                )),
                Some(s) => Outcome::Value(Decimal::ONE, s),
            },
        },
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// tenant, service, meter index, group_by values, unique value.
type Key = (String, String, usize, Vec<String>, String);

#[derive(Default)]
struct Acc {
    totals: BTreeMap<Key, Decimal>,
    out: Evaluated,
}

impl Acc {
    fn item<A: Attributes + ?Sized, R: Attributes + ?Sized>(
        &mut self,
        item: &Item<'_, A, R>,
        who: &(String, String),
        meters: &[(usize, &MeterDefinition)],
    ) {
        let mut bad = None;
        for &(index, def) in meters {
            let (value, unique) = match outcome(item, def) {
                Outcome::Skip => continue,
                Outcome::Bad(why) => {
                    bad = Some(why);
                    continue;
                }
                Outcome::Value(v, u) => (v, u),
            };
            let dims =
                def.group_by.iter().map(|k| truncate(item.text(k).unwrap_or_default(), MAX_DIMENSION_LEN)).collect();
            let key = (who.0.clone(), who.1.clone(), index, dims, unique);
            match self.totals.get_mut(&key) {
                None => {
                    self.totals.insert(key, value);
                }
                Some(total) => match def.aggregation.combine(*total, value) {
                    Some(v) => *total = v,
                    None => {
                        bad = Some(format!(
                            "custom meter {}: the request's values sum past the largest storable value",
                            def.name
                        ))
                    }
                },
            }
        }
        if let Some(why) = bad {
            self.out.rejected += 1;
            self.out.reason = why;
        }
    }
}

/// Custom meters evaluated resource by resource, as [`crate::measure`] walks a request.
pub struct Evaluator<'m> {
    meters: &'m [MeterDefinition],
    /// The meters of the request's signal, with their index in `meters`.
    mine: Vec<(usize, &'m MeterDefinition)>,
    acc: Acc,
}

impl<'m> Evaluator<'m> {
    /// Evaluates those of `meters` that read `signal`.
    pub fn new(signal: Signal, meters: &'m [MeterDefinition]) -> Self {
        let mine = meters.iter().enumerate().filter(|(_, m)| m.signal == signal).collect();
        Self { meters, mine, acc: Acc::default() }
    }

    /// Spans or log records (their attributes) of one resource, whose tenant and service are `who`.
    pub fn items<'a, R: Attributes + ?Sized, A: Attributes + ?Sized + 'a>(
        &mut self,
        resource: &R,
        items: impl Iterator<Item = &'a A>,
        who: &(String, String),
    ) {
        if self.mine.is_empty() {
            return;
        }
        for attrs in items {
            self.acc.item(&Item { attrs, resource, metric: None, point: None }, who, &self.mine);
        }
    }

    /// The metrics of one resource: each data point is an item.
    pub fn metrics<R: Attributes + ?Sized, M: MetricView>(
        &mut self,
        resource: &R,
        metrics: &[&M],
        who: &(String, String),
    ) {
        if self.mine.is_empty() {
            return;
        }
        for metric in metrics {
            let name = metric.name();
            metric.for_each_point(|attrs, point| {
                self.acc.item(&Item { attrs, resource, metric: Some(name), point }, who, &self.mine);
            });
        }
    }

    /// The records, at `now`, and the refusals.
    pub fn finish(self, now: OffsetDateTime) -> Evaluated {
        let Acc { totals, mut out } = self.acc;
        out.records = totals
            .into_iter()
            .map(|((tenant, service, index, dims, unique), value)| {
                let def = &self.meters[index];
                let mut r = UsageRecord::new(&tenant, &def.name, now, value).with_service(&service);
                r.dimensions = def.group_by.iter().cloned().zip(dims).collect();
                if def.aggregation == Aggregation::UniqueCount {
                    r = r.with_unique(&unique);
                }
                r
            })
            .collect();
        out
    }
}

/// Evaluates `meters` over `request`, at `now`. `resolve` gives the tenant and
/// service of a resource's items, or `None` when they are refused (and
/// reported) elsewhere.
pub fn evaluate<R: RequestView + ?Sized>(
    request: &R,
    meters: &[MeterDefinition],
    now: OffsetDateTime,
    mut resolve: impl FnMut(&R::Resource) -> Option<(String, String)>,
) -> Evaluated {
    let mut eval = Evaluator::new(request.signal(), meters);
    request.for_each_resource_spans(|resource, spans| {
        if let Some(who) = resolve(resource) {
            eval.items(resource, spans.iter().map(|s| otlp::view::SpanView::attributes(*s)), &who);
        }
    });
    request.for_each_resource_logs(|resource, logs| {
        if let Some(who) = resolve(resource) {
            eval.items(resource, logs.iter().map(|l| otlp::view::LogView::attributes(*l)), &who);
        }
    });
    request.for_each_resource_metrics(|resource, metrics| {
        if let Some(who) = resolve(resource) {
            eval.metrics(resource, metrics, &who);
        }
    });
    eval.finish(now)
}

#[cfg(test)]
#[path = "custom_tests.rs"]
mod tests;
