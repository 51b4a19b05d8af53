//! The event loop's promise to a reconciliation running beside it: every record reserved
//! before a time has been applied to the tracker. A part of a dump waits for it blocked, woken
//! when the loop publishes, and asks the loop to read the rings at once rather than at its next
//! look of its own (up to [`crate::load::READ_IDLE_MAX`] on a quiet host). Polling it every
//! millisecond cost nearly half of a reconciliation's CPU, and made a dump of a quiet host's
//! 100,000 sockets last seconds.

use std::{
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{clock::mono_now_ns, stream::SUBMIT_MARGIN_NS};

#[derive(Debug, Default)]
pub struct Applied {
    state: Mutex<State>,
    advanced: Condvar,
    /// A waiter asks for a read of the rings now.
    wanted: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// `CLOCK_MONOTONIC` ns: every record reserved before it has been applied.
    up_to: u64,
    /// A thread waits on `advanced`: only then does a publication wake anyone.
    waiting: bool,
}

impl Applied {
    /// Called by the event loop once the rings were emptied by a read that began at `up_to`.
    pub fn publish(&self, up_to: u64) {
        let mut s = self.lock();
        s.up_to = s.up_to.max(up_to);
        if std::mem::take(&mut s.waiting) {
            self.advanced.notify_all();
        }
    }

    /// Blocks until every record reserved before `at` (`CLOCK_MONOTONIC` ns) has been applied,
    /// or `timeout` passed; whether it was.
    pub fn wait_for(&self, at: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // A read that begins earlier than this cannot cover `at` (it leaves the records of its
        // last margin to the next read): asking for one sooner would be asking twice.
        let ask_at = at + SUBMIT_MARGIN_NS;
        let mut s = self.lock();
        loop {
            if s.up_to >= at {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = match ask_at.checked_sub(mono_now_ns()) {
                Some(early) if early > 0 => Duration::from_nanos(early),
                _ => {
                    self.wanted.notify_one();
                    deadline - now
                }
            };
            s.waiting = true;
            s = self
                .advanced
                .wait_timeout(s, wait.min(deadline - now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Completes when a waiter asks for a read of the rings (at once, if one asked since the
    /// last time this completed). Cancel-safe: an unanswered request is kept.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn a_publication_wakes_the_waiter_it_covers() {
        let applied = Arc::new(Applied::default());
        let at = mono_now_ns();
        let waiter = {
            let applied = Arc::clone(&applied);
            thread::spawn(move || applied.wait_for(at, Duration::from_secs(10)))
        };
        // The loop is asked to read once the margin has passed; it then publishes.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(applied.wanted());
        applied.publish(at - 1);
        applied.publish(mono_now_ns());
        assert!(waiter.join().unwrap());
        assert!(applied.wait_for(at, Duration::ZERO));
    }

    #[test]
    fn a_wait_ends_at_its_timeout_without_a_publication() {
        let applied = Applied::default();
        applied.publish(5);
        let began = Instant::now();
        assert!(!applied.wait_for(mono_now_ns(), Duration::from_millis(30)));
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert!(applied.wait_for(5, Duration::ZERO), "already applied");
        applied.publish(3);
        assert!(applied.wait_for(5, Duration::ZERO), "never moves back");
        assert!(!applied.wait_for(6, Duration::ZERO));
    }
}
