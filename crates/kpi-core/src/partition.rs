//! Input partitions, the unit of state: each keeps its own windows, ledger and duplicate ids,
//! so that one can be dropped or rebuilt by replay without touching the others, and its
//! components merge with any other's.

use crate::event::Family;

/// An input partition: the topic's family and the partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub family: Family,
    pub partition: i32,
}

impl PartitionId {
    pub fn new(family: Family, partition: i32) -> Self {
        PartitionId { family, partition }
    }
}
