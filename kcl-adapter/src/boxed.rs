//! SDK calls awaited through a box.
//!
//! An SDK operation's future is tens of kilobytes. Awaited in place, it is part of every
//! future that awaits it, up through the checkpointer, the processor's checkpoint call and
//! the worker's delivery loop; in a debug build, where every temporary of a `poll` keeps its
//! own stack slot, a shard's task then overflowed the 2 MiB stack of a tokio worker thread
//! (fleet test, a checkpoint after a shard end). Boxed, each of those futures holds a pointer.

use std::future::Future;
use std::pin::Pin;

/// `.boxed()` on any future: the same future, on the heap.
pub(crate) trait Boxed: Future + Sized {
    /// This future, pinned in a box.
    fn boxed(self) -> Pin<Box<Self>> {
        Box::pin(self)
    }
}

impl<F: Future> Boxed for F {}
