//! Which guest pages back which live object: an interval index, so a new page list is checked
//! against every other object's backing in O(entries × log n) rather than by scanning all
//! objects (which a guest with many objects could turn into a stall).

use std::collections::BTreeMap;

use crate::guest_ram::Extent;

/// Disjoint backing extents of live objects, by start address.
#[derive(Debug, Default)]
pub struct BackingIndex {
    /// start → (end, owner).
    by_start: BTreeMap<u64, (u64, u32)>,
}

/// Why a page list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The offending entry.
    pub extent: Extent,
    /// The object whose pages it overlaps (the object itself when its list overlaps itself).
    pub owner: u32,
}

impl BackingIndex {
    /// The first entry of `extents` (a prospective backing of object `id`) that overlaps
    /// another entry of the list, or pages that back an object other than `id`.
    pub fn conflict(&self, id: u32, extents: &[Extent]) -> Option<Conflict> {
        let mut sorted: Vec<&Extent> = extents.iter().collect();
        sorted.sort_unstable_by_key(|x| x.gpa);
        if let Some(w) = sorted.windows(2).find(|w| w[0].gpa + w[0].len > w[1].gpa) {
            return Some(Conflict {
                extent: *w[1],
                owner: id,
            });
        }
        for x in extents {
            // Indexed extents are disjoint, so walking down from the last one that starts
            // before x ends meets every overlapping one before any that ends before x.
            for (_, &(end, owner)) in self.by_start.range(..x.gpa + x.len).rev() {
                if end <= x.gpa {
                    break;
                }
                if owner != id {
                    return Some(Conflict { extent: *x, owner });
                }
            }
        }
        None
    }

    /// Records `extents` as the backing of `id` (checked with [`Self::conflict`] first).
    pub fn insert(&mut self, id: u32, extents: &[Extent]) {
        for x in extents {
            self.by_start.insert(x.gpa, (x.gpa + x.len, id));
        }
    }

    /// Forgets `extents` (an object's backing that it no longer has).
    pub fn remove(&mut self, extents: &[Extent]) {
        for x in extents {
            self.by_start.remove(&x.gpa);
        }
    }

    /// Forgets everything (device reset).
    pub fn clear(&mut self) {
        self.by_start.clear();
    }

    /// Number of indexed extents.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(gpa: u64, len: u64) -> Extent {
        Extent { gpa, len }
    }

    #[test]
    fn overlaps_with_other_objects_are_found() {
        let mut b = BackingIndex::default();
        b.insert(1, &[x(0x1000, 0x2000), x(0x8000, 0x1000)]);
        b.insert(2, &[x(0x4000, 0x1000)]);
        assert_eq!(
            b.conflict(3, &[x(0x3000, 0x1000)]),
            None,
            "touching, not overlapping"
        );
        assert_eq!(
            b.conflict(3, &[x(0x2000, 0x1000)]).map(|c| c.owner),
            Some(1)
        );
        assert_eq!(
            b.conflict(3, &[x(0x3000, 0x2000)]).map(|c| c.owner),
            Some(2)
        );
        assert!(b.conflict(3, &[x(0, 0x10000)]).is_some());
        assert_eq!(b.conflict(3, &[x(0x8fff_f000, 0x1000)]), None);
        // An object may be given pages it already has, but not its neighbour's.
        assert_eq!(b.conflict(1, &[x(0x1000, 0x1000)]), None);
        assert_eq!(
            b.conflict(1, &[x(0x1000, 0x4000)]).map(|c| c.owner),
            Some(2)
        );
    }

    #[test]
    fn a_list_that_overlaps_itself_is_refused() {
        let b = BackingIndex::default();
        let c = b.conflict(
            7,
            &[x(0x5000, 0x1000), x(0x1000, 0x1000), x(0x4000, 0x2000)],
        );
        assert_eq!(
            c,
            Some(Conflict {
                extent: x(0x5000, 0x1000),
                owner: 7
            })
        );
    }

    #[test]
    fn removed_backing_is_free_again() {
        let mut b = BackingIndex::default();
        let pages = [x(0x1000, 0x1000), x(0x3000, 0x1000)];
        b.insert(1, &pages);
        assert_eq!(b.len(), 2);
        assert!(b.conflict(2, &pages).is_some());
        b.remove(&pages);
        assert!(b.is_empty());
        assert_eq!(b.conflict(2, &pages), None);
        b.insert(2, &pages);
        b.clear();
        assert!(b.is_empty());
    }
}
