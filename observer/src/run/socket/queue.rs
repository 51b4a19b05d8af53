//! One client's queue of lines, bounded in bytes. The event loop pushes without ever
//! waiting; the client's task takes what has accumulated and writes it. A client that lets its
//! queue fill up is cut off: its queue is emptied and ends, and the push says so once, so
//! that the drop is counted once.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The lines did not fit: the queue ended now, and its client is to be disconnected.
    Overflowed,
    /// The queue had already ended (overflowed earlier, or its client went away).
    Ended,
}

struct Lines {
    waiting: Vec<Arc<str>>,
    bytes: usize,
    ended: bool,
}

pub struct LineQueue {
    lines: Mutex<Lines>,
    limit: usize,
    /// Lines are waiting (one waiter: the client's task).
    ready: Notify,
    /// The queue ended.
    ended: watch::Sender<bool>,
}

impl LineQueue {
    /// A queue holding up to `limit` bytes of lines.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            lines: Mutex::new(Lines {
                waiting: Vec::new(),
                bytes: 0,
                ended: false,
            }),
            limit,
            ready: Notify::new(),
            ended: watch::Sender::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `lines` (each with its newline), all or none.
    pub fn push(&self, lines: Vec<Arc<str>>) -> Pushed {
        if lines.is_empty() {
            return if self.is_ended() {
                Pushed::Ended
            } else {
                Pushed::Queued
            };
        }
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        let mut q = self.lock();
        if q.ended {
            return Pushed::Ended;
        }
        if q.bytes + bytes > self.limit {
            q.waiting = Vec::new();
            q.bytes = 0;
            q.ended = true;
            drop(q);
            self.ended.send_replace(true);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        if q.waiting.is_empty() {
            q.waiting = lines;
        } else {
            q.waiting.extend(lines);
        }
        q.bytes += bytes;
        drop(q);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Ends the queue: its client went away.
    pub fn end(&self) {
        let mut q = self.lock();
        q.ended = true;
        q.waiting = Vec::new();
        q.bytes = 0;
        drop(q);
        self.ended.send_replace(true);
        self.ready.notify_one();
    }

    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Bytes waiting.
    #[cfg(test)]
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// What has accumulated; `None` once the queue ended.
    #[must_use]
    pub fn take(&self) -> Option<Vec<Arc<str>>> {
        let mut q = self.lock();
        if q.ended {
            return None;
        }
        q.bytes = 0;
        Some(std::mem::take(&mut q.waiting))
    }

    /// Waits for lines; `None` once the queue ended.
    pub async fn next(&self) -> Option<Vec<Arc<str>>> {
        loop {
            match self.take() {
                Some(lines) if lines.is_empty() => self.ready.notified().await,
                taken => return taken,
            }
        }
    }

    /// Completes when the queue ends (a write to a stalled client is then abandoned).
    pub async fn ended(&self) {
        let mut ended = self.ended.subscribe();
        // The sender lives as long as `self`: an error cannot happen while borrowed.
        let _ = ended.wait_for(|e| *e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, len: usize) -> Vec<Arc<str>> {
        (0..n).map(|_| Arc::from("x".repeat(len))).collect()
    }

    #[test]
    fn lines_queue_until_the_limit_then_the_queue_ends_once() {
        let q = LineQueue::new(100);
        assert_eq!(q.push(lines(4, 20)), Pushed::Queued);
        assert_eq!(q.queued_bytes(), 80);
        assert_eq!(q.push(lines(1, 20)), Pushed::Queued, "exactly full fits");
        assert_eq!(q.queued_bytes(), 100);
        assert_eq!(q.push(lines(1, 1)), Pushed::Overflowed);
        assert_eq!(
            q.push(lines(1, 1)),
            Pushed::Ended,
            "the overflow is told once"
        );
        assert!(q.is_ended());
        assert_eq!(q.queued_bytes(), 0, "what was queued is let go");
        assert!(q.take().is_none());
    }

    #[test]
    fn taking_makes_room() {
        let q = LineQueue::new(50);
        assert_eq!(q.push(lines(2, 20)), Pushed::Queued);
        assert_eq!(q.take().map(|l| l.len()), Some(2));
        assert_eq!(q.push(lines(2, 20)), Pushed::Queued);
        assert_eq!(q.take().map(|l| l.len()), Some(2));
        assert_eq!(q.take().map(|l| l.len()), Some(0));
    }

    #[test]
    fn a_batch_larger_than_the_queue_ends_it() {
        let q = LineQueue::new(10);
        assert_eq!(q.push(lines(1, 11)), Pushed::Overflowed);
    }

    #[test]
    fn a_client_that_goes_ends_its_queue() {
        let q = LineQueue::new(10);
        q.end();
        assert_eq!(q.push(lines(1, 1)), Pushed::Ended);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_ends_with_the_queue() {
        let q = Arc::new(LineQueue::new(10));
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { (q.next().await, q.ended().await) })
        };
        tokio::task::yield_now().await;
        assert_eq!(q.push(lines(1, 20)), Pushed::Overflowed);
        let (next, ()) = waiter.await.unwrap();
        assert!(next.is_none());
    }
}
