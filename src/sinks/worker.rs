//! The thread a remote sink delivers from, shared by every such sink.
//!
//! The dispatcher must never wait on the network, so a sink that talks to a server hands its
//! events to a worker thread and returns. The worker owns the sink's [`Delivery`]: it hands
//! it the events, wakes it when it asked to be woken (a batch's age, a retry), and passes on
//! flush and shutdown with their deadlines. The handle ([`Worker`]) sends, waits for the
//! acknowledgements and joins the thread.
//!
//! Control messages (flush, the shutdown deadline, shutdown) travel on a channel of their own
//! that the worker looks at before every data message, so they never wait behind the data
//! (issue 14: a shutdown used to wait behind up to 256 batches that were delivered with full
//! retries, past its deadline). When a shutdown arrives, the data still queued is handed to
//! the delivery in one go and the delivery decides, by the deadline, what it sends and what it
//! keeps for the next start. The network calls themselves run on the library's
//! one I/O runtime ([`crate::pipeline::runtime::io_runtime`]).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::pipeline::SinkError;
use crate::pipeline::SharedEvent;

/// What a sink does on its worker thread.
pub trait Delivery: Send + 'static {
    /// What the dispatcher hands over (the events, and whatever the sink adds to them).
    type Batch: Send + 'static;
    /// Takes events handed over by the dispatcher.
    fn accept(&mut self, events: Self::Batch);
    /// Does what is due by `now` (seal an old batch, retry, probe a server that was down).
    /// Called before every wait.
    fn tick(&mut self, now: Instant);
    /// When to be woken without a message; `None` sleeps until the next one.
    fn wake_at(&self) -> Option<Instant>;
    /// Delivers or safely keeps what it holds (a flush).
    fn flush(&mut self);
    /// Delivers what it holds until `deadline`; what is left is kept on disk or counted.
    fn shutdown(&mut self, deadline: Instant);
    /// A shutdown with this deadline has begun (the dispatcher is still draining its queue
    /// into the worker, which from now on takes every hand-over at once): `accept` must not
    /// wait on the network any more (queue, and send from `tick`), and from `deadline` on,
    /// deliver nothing more, only keep.
    fn deadline(&mut self, deadline: Instant) {
        let _ = deadline;
    }
    /// The sink was dropped without shutdown: keep or count what it holds, without waiting.
    fn abandon(&mut self);
}

/// A control message: never queued behind data.
enum Ctl {
    Flush(Sender<()>),
    Deadline(Instant),
    Shutdown(Instant, Sender<()>),
}

/// How many messages may wait for the worker.
#[derive(Debug, Clone, Copy)]
pub enum Queue {
    /// At most this many batches; the dispatcher waits for room beyond that.
    Bounded(usize),
    /// No bound (the sink limits what it holds itself).
    Unbounded,
}

/// The handle of a sink's worker thread.
pub struct Worker<B = Vec<SharedEvent>> {
    sink: &'static str,
    tx: Option<Sender<B>>,
    ctl: Option<Sender<Ctl>>,
    thread: Option<JoinHandle<()>>,
    join_on_drop: bool,
}

impl<B: Send + 'static> Worker<B> {
    /// Starts the thread `serphona-obs-<sink>` running `delivery`. `join_on_drop`: whether
    /// dropping the handle waits for the thread (to keep on disk what it holds) or not (a
    /// request may be in flight).
    pub fn start<D: Delivery<Batch = B>>(sink: &'static str, delivery: D, queue: Queue, join_on_drop: bool) -> Result<Worker<B>, SinkError> {
        let (tx, rx) = match queue {
            Queue::Bounded(n) => bounded(n.max(1)),
            Queue::Unbounded => unbounded(),
        };
        let (ctl, ctl_rx) = unbounded();
        let thread = std::thread::Builder::new()
            .name(format!("serphona-obs-{sink}"))
            .spawn(move || run(delivery, rx, ctl_rx))
            .map_err(|e| SinkError::Other { sink: sink.into(), message: format!("cannot start the worker thread: {e}") })?;
        Ok(Worker { sink, tx: Some(tx), ctl: Some(ctl), thread: Some(thread), join_on_drop })
    }

    fn error(&self, message: impl Into<String>) -> SinkError {
        SinkError::Other { sink: self.sink.into(), message: message.into() }
    }

    fn control(&self, msg: Ctl) -> Result<(), SinkError> {
        let ctl = self.ctl.as_ref().ok_or_else(|| self.error("the sink is shut down"))?;
        ctl.send(msg).map_err(|_| self.error("the worker thread stopped"))
    }

    /// Hands events to the worker (waits for room when the queue is bounded and full).
    pub fn send_events(&self, events: B) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.error("the sink is shut down"))?;
        tx.send(events).map_err(|_| self.error("the worker thread stopped"))
    }

    /// Tells the worker that a shutdown with this deadline has begun (ahead of any data it
    /// has not taken yet), so it stops delivering at the deadline and the data still coming
    /// does not wait on the network.
    pub fn announce_deadline(&self, deadline: Instant) -> Result<(), SinkError> {
        self.control(Ctl::Deadline(deadline))
    }

    /// Asks for a flush and waits for it, at most `wait` when given.
    pub fn flush(&self, wait: Option<Duration>) -> Result<(), SinkError> {
        let (ack, done) = bounded(1);
        self.control(Ctl::Flush(ack))?;
        match wait {
            Some(wait) => done.recv_timeout(wait).map_err(|_| self.error(format!("the flush did not finish within {wait:?}"))),
            None => done.recv().map_err(|_| self.error("the worker thread stopped during the flush")),
        }
    }

    /// Asks for a shutdown that gives up at `give_up`, waits for it until `wait_until`, and
    /// joins the thread when it finished.
    pub fn shutdown(&mut self, give_up: Instant, wait_until: Instant) -> Result<(), SinkError> {
        let (ack, done) = bounded(1);
        self.control(Ctl::Shutdown(give_up, ack))?;
        self.tx = None;
        self.ctl = None;
        let result = done.recv_deadline(wait_until);
        if result.is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        result.map_err(|_| self.error("the worker did not finish by the shutdown deadline"))
    }
}

impl<B> Drop for Worker<B> {
    fn drop(&mut self) {
        // Closing the channels makes the worker abandon what it holds and stop.
        self.tx = None;
        self.ctl = None;
        if self.join_on_drop {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn run<D: Delivery>(mut d: D, rx: Receiver<D::Batch>, ctl: Receiver<Ctl>) {
    let mut shutting_down = false;
    loop {
        if shutting_down {
            // A shutdown has begun: take everything the dispatcher hands over at once, so its
            // drain never waits on the network (the delivery sends by the deadline, or keeps).
            for events in rx.try_iter() {
                d.accept(events);
            }
        }
        d.tick(Instant::now());
        // Control first: a flush or shutdown never waits behind queued data.
        let msg = match ctl.try_recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(_) => {
                let wait = d.wake_at().map(|at| at.saturating_duration_since(Instant::now()));
                let timeout = match wait {
                    Some(wait) => crossbeam_channel::after(wait),
                    None => crossbeam_channel::never(),
                };
                crossbeam_channel::select_biased! {
                    recv(ctl) -> msg => msg.map(Some).map_err(|_| RecvTimeoutError::Disconnected),
                    recv(rx) -> events => match events {
                        Ok(events) => {
                            d.accept(events);
                            Ok(None)
                        }
                        Err(_) => Err(RecvTimeoutError::Disconnected),
                    },
                    recv(timeout) -> _ => Err(RecvTimeoutError::Timeout),
                }
            }
        };
        match msg {
            Ok(None) => {}
            Ok(Some(Ctl::Flush(ack))) => {
                // What was handed over before the flush is part of it.
                for events in rx.try_iter() {
                    d.accept(events);
                }
                d.flush();
                let _ = ack.send(());
            }
            Ok(Some(Ctl::Deadline(deadline))) => {
                shutting_down = true;
                d.deadline(deadline);
            }
            Ok(Some(Ctl::Shutdown(deadline, ack))) => {
                // The dispatcher has handed over everything before it asked to shut down.
                d.deadline(deadline);
                for events in rx.try_iter() {
                    d.accept(events);
                }
                d.shutdown(deadline);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for events in rx.try_iter() {
                    d.accept(events);
                }
                d.abandon();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>, Option<(Sender<()>, Receiver<()>)>);

    impl Delivery for Log {
        type Batch = Vec<SharedEvent>;
        fn accept(&mut self, events: Vec<SharedEvent>) {
            // The first hand-over waits for the gate (a slow server).
            if let Some((entered, gate)) = self.1.take() {
                let _ = entered.send(());
                let _ = gate.recv();
            }
            self.0.lock().unwrap().push(format!("accept {}", events.len()));
        }
        fn deadline(&mut self, _deadline: Instant) {
            self.0.lock().unwrap().push("deadline".into());
        }
        fn tick(&mut self, _now: Instant) {}
        fn wake_at(&self) -> Option<Instant> {
            None
        }
        fn flush(&mut self) {
            self.0.lock().unwrap().push("flush".into());
        }
        fn shutdown(&mut self, _deadline: Instant) {
            self.0.lock().unwrap().push("shutdown".into());
        }
        fn abandon(&mut self) {
            self.0.lock().unwrap().push("abandon".into());
        }
    }

    #[test]
    fn messages_reach_the_delivery_in_order_and_shutdown_joins() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut w = Worker::start("test", Log(log.clone(), None), Queue::Bounded(4), true).unwrap();
        w.send_events(vec![crate::types::test_event("a").into(), crate::types::test_event("b").into()]).unwrap();
        w.flush(None).unwrap();
        let now = Instant::now();
        w.shutdown(now + Duration::from_secs(5), now + Duration::from_secs(6)).unwrap();
        assert_eq!(*log.lock().unwrap(), ["accept 2", "flush", "deadline", "shutdown"]);
        assert!(w.send_events(vec![]).is_err(), "a shut down worker takes nothing");
    }

    #[test]
    fn a_dropped_handle_makes_the_delivery_abandon() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let w = Worker::start("test", Log(log.clone(), None), Queue::Unbounded, true).unwrap();
        w.send_events(vec![crate::types::test_event("a").into()]).unwrap();
        drop(w);
        assert_eq!(*log.lock().unwrap(), ["accept 1", "abandon"]);
    }

    /// Issue 14: a shutdown waited behind up to 256 queued hand-overs. The deadline reaches the
    /// delivery before the data queued ahead of it.
    #[test]
    fn control_messages_overtake_queued_data() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = bounded(1);
        let (entered_tx, entered) = bounded(1);
        let mut w = Worker::start("test", Log(log.clone(), Some((entered_tx, gate))), Queue::Bounded(8), true).unwrap();
        for _ in 0..4 {
            w.send_events(vec![crate::types::test_event("a").into()]).unwrap();
        }
        entered.recv().unwrap();
        // The worker is stuck in the first accept with three hand-overs queued behind it.
        w.announce_deadline(Instant::now() + Duration::from_secs(5)).unwrap();
        open.send(()).unwrap();
        let now = Instant::now();
        w.shutdown(now + Duration::from_secs(5), now + Duration::from_secs(60)).unwrap();
        assert_eq!(*log.lock().unwrap(), ["accept 1", "deadline", "accept 1", "accept 1", "accept 1", "deadline", "shutdown"]);
    }
}
