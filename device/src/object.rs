//! GPU memory objects: id, size, placement, backing pages, VRAM range and LRU stamp, with the
//! checked transitions of the life cycle
//!
//! ```text
//!   SYSTEM --MIGRATE--> VRAM --CLEAN--> CLEANED
//!     ^                  |                |
//!     +------EVICT-------+------EVICT-----+
//! ```

use std::collections::BTreeMap;

use crate::guest_ram::Extent;

/// What makes an object a virtio-gpu 2D resource: its pixel layout. A 2D resource's host
/// copy is its VRAM range (allocated at RESOURCE_CREATE_2D, `stride * height` bytes); its
/// guest backing, when attached, is byte-granular (as virtio-gpu allows) and may be longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// `protocol::format::*`.
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row (width × 4).
    pub stride: u32,
}

pub use pvgpu_abi::protocol::Placement;

/// An operation on an object, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// ATTACH_BACKING.
    Attach,
    /// MIGRATE.
    Migrate,
    /// CLEAN.
    Clean,
    /// EVICT.
    Evict,
    /// FILL, COPY: VRAM data operations.
    VramData,
    /// READ, WRITE: copies between guest pages and VRAM data.
    Transfer,
    /// CHECKSUM.
    Read,
}

/// Errors about objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// No live object has this id.
    #[error("no object {0}")]
    NoSuchObject(u32),
    /// Id 0 is reserved.
    #[error("object id 0 is reserved")]
    ZeroId,
    /// The id is taken.
    #[error("object {0} already exists")]
    Exists(u32),
    /// The object table is full.
    #[error("too many objects (limit {0})")]
    TooMany(u32),
    /// The operation is not allowed in the object's state.
    #[error(
        "{op:?} is not allowed on object {id} in placement {placement:?} (backing: {has_backing})"
    )]
    InvalidState {
        /// The object.
        id: u32,
        /// What was tried.
        op: Op,
        /// Its placement.
        placement: Placement,
        /// Whether it has guest pages.
        has_backing: bool,
    },
    /// `offset + len` is outside the object.
    #[error("range {offset:#x}+{len:#x} is outside object {id} of {size:#x} bytes")]
    OutOfRange {
        /// The object.
        id: u32,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Object size.
        size: u64,
    },
}

/// One object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Guest-chosen id (non-zero).
    pub id: u32,
    /// Size in bytes (whole pages).
    pub size: u64,
    /// Where the data is.
    pub placement: Placement,
    /// Guest pages holding (a copy of) the data: `Some` in SYSTEM after ATTACH_BACKING and in
    /// VRAM; `None` before ATTACH_BACKING and in CLEANED.
    pub backing: Option<Vec<Extent>>,
    /// VRAM offset of the data: `Some` exactly in VRAM and CLEANED.
    pub vram_offset: Option<u64>,
    /// LRU stamp: the device tick of the last command that used the object.
    pub last_used: u64,
    /// `Some` for a virtio-gpu 2D resource (always VRAM-resident: VRAM with backing,
    /// CLEANED without; never evicted).
    pub image: Option<ImageInfo>,
}

impl Object {
    fn state_error(&self, op: Op) -> ObjectError {
        ObjectError::InvalidState {
            id: self.id,
            op,
            placement: self.placement,
            has_backing: self.backing.is_some(),
        }
    }

    /// Checks that `op` is allowed now.
    pub fn check(&self, op: Op) -> Result<(), ObjectError> {
        let ok = match op {
            Op::Attach => self.placement == Placement::System && self.backing.is_none(),
            Op::Migrate => self.placement == Placement::System && self.backing.is_some(),
            Op::Clean => self.placement == Placement::Vram,
            Op::Evict => self.placement != Placement::System && self.image.is_none(),
            Op::VramData | Op::Transfer => self.placement != Placement::System,
            Op::Read => self.placement != Placement::System || self.backing.is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(self.state_error(op))
        }
    }

    /// Checks that `[offset, offset + len)` lies within the object.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<(), ObjectError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(ObjectError::OutOfRange {
                id: self.id,
                offset,
                len,
                size: self.size,
            }),
        }
    }
}

/// The live objects.
#[derive(Debug, Clone)]
pub struct ObjectTable {
    objects: BTreeMap<u32, Object>,
    max: u32,
}

impl ObjectTable {
    /// An empty table holding at most `max` objects.
    pub fn new(max: u32) -> Self {
        ObjectTable {
            objects: BTreeMap::new(),
            max,
        }
    }

    /// Most live objects.
    pub fn limit(&self) -> u32 {
        self.max
    }

    /// Number of live objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Adds a SYSTEM object without backing.
    pub fn create(&mut self, id: u32, size: u64, tick: u64) -> Result<&mut Object, ObjectError> {
        self.check_new(id)?;
        Ok(self.objects.entry(id).or_insert(Object {
            id,
            size,
            placement: Placement::System,
            backing: None,
            vram_offset: None,
            last_used: tick,
            image: None,
        }))
    }

    /// Adds a 2D resource of `size` bytes whose host copy is already at `vram_offset`:
    /// placement CLEANED (VRAM only) until it gets a backing.
    pub fn create_image(
        &mut self,
        id: u32,
        size: u64,
        image: ImageInfo,
        vram_offset: u64,
        tick: u64,
    ) -> Result<&mut Object, ObjectError> {
        let o = self.create(id, size, tick)?;
        o.placement = Placement::Cleaned;
        o.vram_offset = Some(vram_offset);
        o.image = Some(image);
        Ok(o)
    }

    /// Checks that `id` could be created now (for callers that allocate before creating).
    pub fn check_new(&self, id: u32) -> Result<(), ObjectError> {
        if id == 0 {
            return Err(ObjectError::ZeroId);
        }
        if self.objects.contains_key(&id) {
            return Err(ObjectError::Exists(id));
        }
        if self.objects.len() >= self.max as usize {
            return Err(ObjectError::TooMany(self.max));
        }
        Ok(())
    }

    /// The object `id`.
    pub fn get(&self, id: u32) -> Result<&Object, ObjectError> {
        self.objects.get(&id).ok_or(ObjectError::NoSuchObject(id))
    }

    /// The object `id`, mutable, with its LRU stamp set to `tick`.
    pub fn touch(&mut self, id: u32, tick: u64) -> Result<&mut Object, ObjectError> {
        let o = self
            .objects
            .get_mut(&id)
            .ok_or(ObjectError::NoSuchObject(id))?;
        o.last_used = tick;
        Ok(o)
    }

    /// Removes and returns the object `id`.
    pub fn remove(&mut self, id: u32) -> Result<Object, ObjectError> {
        self.objects
            .remove(&id)
            .ok_or(ObjectError::NoSuchObject(id))
    }

    /// Removes every object (device reset).
    pub fn drain(&mut self) -> Vec<Object> {
        std::mem::take(&mut self.objects).into_values().collect()
    }

    /// All objects, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Ids of the objects holding VRAM, least recently used first (eviction candidates).
    pub fn lru_in_vram(&self) -> Vec<u32> {
        let mut v: Vec<&Object> = self
            .objects
            .values()
            .filter(|o| o.vram_offset.is_some())
            .collect();
        v.sort_by_key(|o| (o.last_used, o.id));
        v.into_iter().map(|o| o.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> Option<Vec<Extent>> {
        Some(vec![Extent {
            gpa: 0x1000,
            len: 0x1000,
        }])
    }

    #[test]
    fn create_get_remove() {
        let mut t = ObjectTable::new(2);
        assert_eq!(t.create(0, 4096, 0).unwrap_err(), ObjectError::ZeroId);
        t.create(1, 4096, 0).unwrap();
        assert_eq!(t.create(1, 4096, 0).unwrap_err(), ObjectError::Exists(1));
        t.create(2, 4096, 0).unwrap();
        assert_eq!(t.create(3, 4096, 0).unwrap_err(), ObjectError::TooMany(2));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(1).unwrap().placement, Placement::System);
        t.remove(1).unwrap();
        assert_eq!(t.get(1).unwrap_err(), ObjectError::NoSuchObject(1));
        assert_eq!(t.remove(1).unwrap_err(), ObjectError::NoSuchObject(1));
        assert_eq!(t.drain().len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn transitions_are_checked() {
        let mut t = ObjectTable::new(8);
        let o = t.create(1, 8192, 0).unwrap();
        // Fresh: only attach (and read fails without data).
        assert!(o.check(Op::Attach).is_ok());
        for op in [Op::Migrate, Op::Clean, Op::Evict, Op::VramData, Op::Read] {
            assert!(o.check(op).is_err(), "{op:?}");
        }
        o.backing = ext();
        for op in [Op::Attach, Op::Clean, Op::Evict, Op::VramData] {
            assert!(o.check(op).is_err(), "{op:?}");
        }
        assert!(o.check(Op::Migrate).is_ok());
        assert!(o.check(Op::Read).is_ok());
        o.placement = Placement::Vram;
        o.vram_offset = Some(0);
        for op in [Op::Clean, Op::Evict, Op::VramData, Op::Read] {
            assert!(o.check(op).is_ok(), "{op:?}");
        }
        assert!(o.check(Op::Migrate).is_err());
        assert!(o.check(Op::Attach).is_err());
        o.placement = Placement::Cleaned;
        o.backing = None;
        assert!(matches!(
            o.check(Op::Clean),
            Err(ObjectError::InvalidState {
                id: 1,
                op: Op::Clean,
                placement: Placement::Cleaned,
                has_backing: false
            })
        ));
        assert!(o.check(Op::Migrate).is_err());
        assert!(o.check(Op::Evict).is_ok());
    }

    #[test]
    fn ranges_are_checked() {
        let mut t = ObjectTable::new(8);
        let o = t.create(1, 8192, 0).unwrap();
        assert!(o.check_range(0, 8192).is_ok());
        assert!(o.check_range(8192, 0).is_ok());
        assert!(o.check_range(1, 8192).is_err());
        assert!(o.check_range(u64::MAX, 2).is_err());
    }

    #[test]
    fn lru_order() {
        let mut t = ObjectTable::new(8);
        for id in 1..=3 {
            let o = t.create(id, 4096, 0).unwrap();
            o.vram_offset = Some(u64::from(id) * 4096);
        }
        t.create(4, 4096, 0).unwrap();
        t.touch(1, 5).unwrap();
        t.touch(3, 2).unwrap();
        t.touch(2, 9).unwrap();
        assert_eq!(t.lru_in_vram(), vec![3, 1, 2]);
        assert!(t.touch(9, 1).is_err());
    }
}
