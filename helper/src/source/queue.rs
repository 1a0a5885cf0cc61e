//! The queue between the reader thread and the pipeline: batches of flows, bounded by the
//! number of messages queued (`--queue`), not by the number of batches.
//!
//! The reader hands on everything one wakeup read as one batch (see [`super::reader`]). A
//! channel bounded in batches would hold 64 flows, not 16,384, when flows trickle in one per
//! wakeup while the pipeline is slow (waiting for a PTR answer, scanning `/proc`): the reader
//! would stop reading early, and the flows behind would be stamped late, when it read them
//! at last. So the channel is not bounded, and a count of the messages in it is: while it
//! holds `limit` or more, the reader waits, and the kernel's socket buffer holds what comes
//! meanwhile, as before. A batch always fits an empty queue, so at most `limit` plus one
//! batch are queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

use super::reader::Batch;

/// How long the reader waits for room before it looks at the count again (a pipeline that
/// frees room says so at once; this only bounds a missed signal).
const ROOM_WAIT: Duration = Duration::from_millis(10);

/// A queue for `limit` messages.
pub fn flow_queue(limit: usize) -> (FlowSender, FlowReceiver) {
    let (tx, rx) = unbounded();
    let (room_tx, room_rx) = bounded(1);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        FlowSender {
            tx,
            room: room_rx,
            queued: queued.clone(),
            limit: limit.max(1),
        },
        FlowReceiver {
            rx,
            room: room_tx,
            queued,
        },
    )
}

/// The reader's end.
pub struct FlowSender {
    tx: Sender<Batch>,
    room: Receiver<()>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl FlowSender {
    /// Hands `batch` on, first waiting while the queue is full; `Err` when the pipeline is
    /// gone.
    pub fn send(&self, batch: Batch) -> Result<(), Batch> {
        let n = batch.len();
        loop {
            let queued = self.queued.load(Ordering::Acquire);
            if queued == 0 || queued.saturating_add(n) <= self.limit {
                break;
            }
            match self.room.recv_timeout(ROOM_WAIT) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(batch),
            }
        }
        self.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.send(batch).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            e.into_inner()
        })
    }

    /// Whether the pipeline has received everything handed on (it may still be working on
    /// the last batch): what the reader's early attribution asks, as it did when flows went
    /// one by one.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

/// The pipeline's end.
pub struct FlowReceiver {
    rx: Receiver<Batch>,
    room: Sender<()>,
    queued: Arc<AtomicUsize>,
}

impl FlowReceiver {
    /// The channel, to select on; each batch received from it is counted out with
    /// [`FlowReceiver::taken`] once the pipeline is done with it.
    pub fn channel(&self) -> &Receiver<Batch> {
        &self.rx
    }

    /// Counts `n` messages out of the queue, and tells a waiting reader there is room.
    pub fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        let _ = self.room.try_send(());
    }

    /// Whether nothing is queued behind what was received.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::reader::Incoming;

    fn batch(n: usize) -> Batch {
        (0..n).map(|_| Incoming::Lost(1)).collect()
    }

    #[test]
    fn the_count_of_messages_bounds_the_queue_and_a_batch_always_fits_an_empty_one() {
        let (tx, rx) = flow_queue(300);
        // Many small batches fit, as many as the limit allows (not one per slot).
        for _ in 0..300 {
            tx.send(batch(1)).expect("room");
        }
        assert!(!tx.is_empty());
        // Full: the next waits until the pipeline takes some.
        let waiting = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            tx.send(batch(200)).expect("sent");
            (t0.elapsed(), tx)
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut got = 0;
        while got < 200 {
            let b = rx.channel().recv().expect("batch");
            rx.taken(b.len());
            got += b.len();
        }
        let (waited, tx) = waiting.join().expect("sender");
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        // Everything arrives, in order, counted out.
        while let Ok(b) = rx.channel().try_recv() {
            rx.taken(b.len());
            got += b.len();
        }
        assert_eq!(got, 500);
        assert!(tx.is_empty());
        // A batch larger than the limit goes into an empty queue.
        let (tx, rx) = flow_queue(1);
        tx.send(batch(256)).expect("fits");
        assert_eq!(rx.channel().recv().expect("batch").len(), 256);
        // The pipeline gone: the reader is told, also while it waits for room.
        drop(rx);
        assert!(tx.send(batch(1)).is_err());
    }
}
