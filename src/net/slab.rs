//! A fixed-capacity slab with generations: a stale key (a timer or a buyer answer for a lead
//! that has since finished and whose slot was reused) is recognised and ignored.

/// A slot index plus the generation it was issued with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub index: usize,
    pub gen: u32,
}

pub struct Slab<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<usize>,
    len: usize,
    capacity: usize,
}

impl<T> Slab<T> {
    /// A slab that will never hold more than `capacity` values.
    pub fn with_capacity(capacity: usize) -> Slab<T> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            capacity,
        }
    }

    /// Change the bound (a reload); values already held beyond a lowered bound stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Insert a value; `None` when full.
    pub fn insert(&mut self, value: T) -> Option<Key> {
        if self.is_full() {
            return None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push((0, None));
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[index];
        e.0 = e.0.wrapping_add(1);
        e.1 = Some(value);
        self.len += 1;
        Some(Key { index, gen: e.0 })
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        match self.entries.get(key.index) {
            Some((g, Some(v))) if *g == key.gen => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.entries.get_mut(key.index) {
            Some((g, Some(v))) if *g == key.gen => Some(v),
            _ => None,
        }
    }

    /// The live value at an index, whatever its generation (for events keyed by index only).
    pub fn at(&mut self, index: usize) -> Option<(Key, &mut T)> {
        match self.entries.get_mut(index) {
            Some((g, Some(v))) => Some((Key { index, gen: *g }, v)),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        match self.entries.get_mut(key.index) {
            Some((g, slot @ Some(_))) if *g == key.gen => {
                self.len -= 1;
                self.free.push(key.index);
                slot.take()
            }
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|(_, v)| v.as_ref())
    }

    /// Every live value with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, (gen, v))| v.as_ref().map(|v| (Key { index, gen: *gen }, v)))
    }

    /// Keys of every live value.
    /// The keys of the occupied entries into `out`, cleared first: no allocation once `out`
    /// has grown to the slab's size (the housekeeping sweep, many times a second).
    pub fn keys_into(&self, out: &mut Vec<Key>) {
        out.clear();
        out.extend(
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, (_, v))| v.is_some())
                .map(|(index, (gen, _))| Key { index, gen: *gen }),
        );
    }

    pub fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        self.keys_into(&mut keys);
        keys
    }
}
