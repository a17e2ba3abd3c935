//! A group of the SIP loop's inputs that is polled only after one of them woke the loop.
//!
//! The loop's `select!` waits on the SIP inbound queue, the core's timer and about fifteen
//! other inputs (reloads, routing decisions, media events, line events, ticks…). A `select!`
//! polls every branch each time it is entered, and the loop enters it after every input: ~17
//! channel polls per wake-up, ~50 K instructions per call (issue 22), nearly all on inputs
//! that had nothing. [`WakeGroup`] puts the quiet inputs behind one branch: they are polled
//! with the group's own waker, which marks the group ready and wakes the loop; while none of
//! them has woken it since their last poll, the branch costs one flag check.
//!
//! The inputs keep their registrations between polls (a tokio channel or timer remembers the
//! last waker it was polled with), so a message on any of them still wakes the loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

/// The shared half: set by the inputs' wakers, read by the loop.
#[derive(Debug)]
struct Shared {
    /// An input of the group may have something: poll them.
    ready: AtomicBool,
    /// The loop's waker, woken when an input of the group wakes.
    parent: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        let parent = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = parent.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Wake-up bookkeeping for a group of inputs polled together.
#[derive(Debug)]
pub(super) struct WakeGroup {
    shared: Arc<Shared>,
    /// The waker the group's inputs are polled with.
    waker: Waker,
}

impl WakeGroup {
    /// A group whose inputs are polled on the first poll.
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            ready: AtomicBool::new(true),
            parent: Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&shared));
        WakeGroup { shared, waker }
    }

    /// Records `cx`'s waker as the one to wake and says whether the inputs must be polled
    /// now (one of them woke since the last poll). The flag is cleared before the inputs are
    /// polled, so a wake during the poll is not lost.
    pub(super) fn begin(&self, cx: &Context<'_>) -> bool {
        {
            let mut parent = self.shared.parent.lock().unwrap_or_else(|e| e.into_inner());
            match parent.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *parent = Some(cx.waker().clone()),
            }
        }
        self.shared.ready.swap(false, Ordering::AcqRel)
    }

    /// The context to poll the group's inputs with.
    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    /// An input returned something: others may be ready too, so poll them again next time.
    pub(super) fn again(&self) {
        self.shared.ready.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `rx` through the group as the loop does; `None` when the group was not ready.
    fn poll_group(
        g: &WakeGroup,
        cx: &Context<'_>,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<u8>,
    ) -> Option<Poll<Option<u8>>> {
        if !g.begin(cx) {
            return None;
        }
        let mut gcx = g.context();
        let p = rx.poll_recv(&mut gcx);
        if p.is_ready() {
            g.again();
        }
        Some(p)
    }

    #[test]
    fn inputs_are_polled_only_after_they_woke_the_loop() {
        let g = WakeGroup::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let parent = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&parent);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();

        // The first poll polls the inputs: nothing, and the channel now knows the group.
        assert_eq!(poll_group(&g, &cx, &mut rx), Some(Poll::Pending));
        // Nothing woke the group: the inputs are skipped.
        assert_eq!(poll_group(&g, &cx, &mut rx), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);

        // A message wakes the loop, and the next poll takes it.
        tx.send(7).expect("send");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_group(&g, &cx, &mut rx), Some(Poll::Ready(Some(7))));
        // After a message the group is polled again (another input may have one too).
        assert_eq!(poll_group(&g, &cx, &mut rx), Some(Poll::Pending));
        assert_eq!(poll_group(&g, &cx, &mut rx), None);

        // Two messages before the loop runs: both are taken, one per poll.
        tx.send(8).expect("send");
        tx.send(9).expect("send");
        assert_eq!(poll_group(&g, &cx, &mut rx), Some(Poll::Ready(Some(8))));
        assert_eq!(poll_group(&g, &cx, &mut rx), Some(Poll::Ready(Some(9))));
    }
}
