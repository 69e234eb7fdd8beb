//! A head's scratch across calls, of the head's own type.

use std::any::Any;

/// A head's scratch across calls, of the head's own type (created on first use, grow-only).
#[derive(Default)]
pub struct HeadCache(Option<Box<dyn Any + Send>>);

impl HeadCache {
    /// An empty cache.
    pub fn new() -> Self {
        HeadCache(None)
    }

    /// The cache as type `C`, created (default) when empty or of another head's type.
    pub fn get<C: Default + Send + 'static>(&mut self) -> &mut C {
        if !self.0.as_ref().is_some_and(|c| c.is::<C>()) {
            self.0 = Some(Box::new(C::default()));
        }
        self.0
            .as_mut()
            .and_then(|c| c.downcast_mut::<C>())
            .expect("just created")
    }
}

impl std::fmt::Debug for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HeadCache(..)"
        } else {
            "HeadCache(empty)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_reused_and_replaced_by_type() {
        let mut cache = HeadCache::new();
        cache.get::<Vec<u8>>().push(1);
        assert_eq!(cache.get::<Vec<u8>>().len(), 1);
        assert_eq!(*cache.get::<u32>(), 0);
        assert_eq!(cache.get::<Vec<u8>>().len(), 0);
    }
}
