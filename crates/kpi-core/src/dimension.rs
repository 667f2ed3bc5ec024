//! Dimension values (`segment`, `region`, `channel`) interned to small ids, with a cap.
//!
//! A dimension value becomes a label on every KPI series, so an unbounded set of values
//! (a producer that writes customer names into `segment`) would explode Prometheus. The
//! first `cap` distinct values of a dimension keep their own series; later ones fold into
//! [`OTHER`] and count as overflow. An event without the field counts under [`UNKNOWN`], so
//! the series of one dimension always add up to the overall series.

use std::collections::HashMap;

use crate::event::DIMENSION_FIELDS;

/// The value that collects everything past the cap.
pub const OTHER: &str = "other";
/// The value of an event that lacks the dimension field (or has it empty).
pub const UNKNOWN: &str = "unknown";

/// One configured dimension and its interned values.
#[derive(Debug)]
struct Dimension {
    name: String,
    /// Position of the field in [`crate::event::Event::dimensions`].
    field: usize,
    /// Bounded by the cap, so a fast hash cannot be made to degrade by many values.
    ids: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    values: Vec<Box<str>>,
    other: Option<u32>,
    overflowed_events: u64,
}

/// The configured dimensions, in configuration order.
#[derive(Debug)]
pub struct Dimensions {
    cap: usize,
    dims: Vec<Dimension>,
}

impl Dimensions {
    /// `names` are validated against [`DIMENSION_FIELDS`], and for repeats, when the
    /// configuration loads; an unknown or repeated name here is skipped, so each field is
    /// a dimension at most once.
    pub fn new(names: &[String], cap: usize) -> Self {
        let dims = names
            .iter()
            .enumerate()
            .filter(|(i, name)| !names[..*i].contains(name))
            .filter_map(|(_, name)| {
                let field = DIMENSION_FIELDS.iter().position(|f| f == name)?;
                Some(Dimension {
                    name: name.clone(),
                    field,
                    ids: HashMap::default(),
                    values: Vec::new(),
                    other: None,
                    overflowed_events: 0,
                })
            })
            .collect();
        Dimensions { cap, dims }
    }

    pub fn len(&self) -> usize {
        self.dims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.dims.iter().map(|d| d.name.as_str())
    }

    /// Field position of dimension `dim` in an event's dimensions.
    pub fn field(&self, dim: usize) -> usize {
        self.dims[dim].field
    }

    /// The id of `raw` in dimension `dim`, interning it while under the cap.
    pub fn intern(&mut self, dim: usize, raw: Option<&str>) -> u32 {
        let cap = self.cap;
        let d = &mut self.dims[dim];
        let value = match raw {
            Some(v) if !v.is_empty() => v,
            _ => UNKNOWN,
        };
        if let Some(&id) = d.ids.get(value) {
            return id;
        }
        // A producer's literal "other" shares the overflow series, so one label value never
        // names two series.
        if d.values.len() < cap && value != OTHER {
            return push(d, value);
        }
        if value != OTHER {
            d.overflowed_events += 1;
        }
        match d.other {
            Some(id) => id,
            None => {
                let id = push(d, OTHER);
                d.other = Some(id);
                id
            }
        }
    }

    pub fn value(&self, dim: usize, id: u32) -> &str {
        &self.dims[dim].values[id as usize]
    }

    /// Events whose value of dimension `dim` folded into [`OTHER`], since start.
    pub fn overflowed_events(&self, dim: usize) -> u64 {
        self.dims[dim].overflowed_events
    }
}

fn push(d: &mut Dimension, value: &str) -> u32 {
    let id = d.values.len() as u32;
    d.values.push(value.into());
    d.ids.insert(value.into(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other() {
        let mut d = Dimensions::new(&["segment".to_owned()], 2);
        let smb = d.intern(0, Some("smb"));
        let ent = d.intern(0, Some("enterprise"));
        assert_ne!(smb, ent);
        assert_eq!(d.intern(0, Some("smb")), smb);
        let other = d.intern(0, Some("mid"));
        assert_eq!(d.value(0, other), OTHER);
        assert_eq!(d.intern(0, Some("startup")), other);
        assert_eq!(d.overflowed_events(0), 2);
        assert_eq!(d.intern(0, Some("enterprise")), ent);
    }

    #[test]
    fn a_literal_other_shares_the_overflow_series() {
        let mut d = Dimensions::new(&["segment".to_owned()], 2);
        let other = d.intern(0, Some(OTHER));
        assert_eq!(d.overflowed_events(0), 0);
        assert_ne!(d.intern(0, Some("smb")), other);
        assert_eq!(d.intern(0, Some("mid")), other);
        assert_eq!(d.overflowed_events(0), 1);
    }

    #[test]
    fn a_repeated_name_is_one_dimension() {
        let names = ["region", "segment", "region"].map(str::to_owned);
        let d = Dimensions::new(&names, 10);
        assert_eq!(d.names().collect::<Vec<_>>(), ["region", "segment"]);
    }

    #[test]
    fn a_missing_or_empty_value_is_unknown() {
        let mut d = Dimensions::new(&["region".to_owned()], 10);
        let a = d.intern(0, None);
        assert_eq!(d.intern(0, Some("")), a);
        assert_eq!(d.value(0, a), UNKNOWN);
        assert_eq!(d.field(0), 1);
    }
}
