//! The thread a remote sink delivers from, shared by every such sink.
//!
//! The dispatcher must never wait on the network, so a sink that talks to a server hands its
//! events to a worker thread and returns. The worker owns the sink's [`Delivery`]: it hands
//! it the events, wakes it when it asked to be woken (a batch's age, a retry), and passes on
//! flush and shutdown with their deadlines. The handle ([`Worker`]) sends, waits for the
//! acknowledgements and joins the thread. The network calls themselves run on the library's
//! one I/O runtime ([`crate::pipeline::runtime::io_runtime`]).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::pipeline::SinkError;
use crate::pipeline::SharedEvent;

/// What a sink does on its worker thread.
pub trait Delivery: Send + 'static {
    /// Takes events handed over by the dispatcher.
    fn accept(&mut self, events: Vec<SharedEvent>);
    /// Does what is due by `now` (seal an old batch, retry, probe a server that was down).
    /// Called before every wait.
    fn tick(&mut self, now: Instant);
    /// When to be woken without a message; `None` sleeps until the next one.
    fn wake_at(&self) -> Option<Instant>;
    /// Delivers or safely keeps what it holds (a flush).
    fn flush(&mut self);
    /// Delivers what it holds until `deadline`; what is left is kept on disk or counted.
    fn shutdown(&mut self, deadline: Instant);
    /// The sink was dropped without shutdown: keep or count what it holds, without waiting.
    fn abandon(&mut self);
}

enum Msg {
    Events(Vec<SharedEvent>),
    Flush(Sender<()>),
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
pub struct Worker {
    sink: &'static str,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    join_on_drop: bool,
}

impl Worker {
    /// Starts the thread `serphona-obs-<sink>` running `delivery`. `join_on_drop`: whether
    /// dropping the handle waits for the thread (to keep on disk what it holds) or not (a
    /// request may be in flight).
    pub fn start<D: Delivery>(sink: &'static str, delivery: D, queue: Queue, join_on_drop: bool) -> Result<Worker, SinkError> {
        let (tx, rx) = match queue {
            Queue::Bounded(n) => bounded(n.max(1)),
            Queue::Unbounded => unbounded(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("serphona-obs-{sink}"))
            .spawn(move || run(delivery, rx))
            .map_err(|e| SinkError::Other { sink: sink.into(), message: format!("cannot start the worker thread: {e}") })?;
        Ok(Worker { sink, tx: Some(tx), thread: Some(thread), join_on_drop })
    }

    fn error(&self, message: impl Into<String>) -> SinkError {
        SinkError::Other { sink: self.sink.into(), message: message.into() }
    }

    fn send(&self, msg: Msg) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.error("the sink is shut down"))?;
        tx.send(msg).map_err(|_| self.error("the worker thread stopped"))
    }

    /// Hands events to the worker (waits for room when the queue is bounded and full).
    pub fn send_events(&self, events: Vec<SharedEvent>) -> Result<(), SinkError> {
        self.send(Msg::Events(events))
    }

    /// Asks for a flush and waits for it, at most `wait` when given.
    pub fn flush(&self, wait: Option<Duration>) -> Result<(), SinkError> {
        let (ack, done) = bounded(1);
        self.send(Msg::Flush(ack))?;
        match wait {
            Some(wait) => done.recv_timeout(wait).map_err(|_| self.error(format!("the flush did not finish within {wait:?}"))),
            None => done.recv().map_err(|_| self.error("the worker thread stopped during the flush")),
        }
    }

    /// Asks for a shutdown that gives up at `give_up`, waits for it until `wait_until`, and
    /// joins the thread when it finished.
    pub fn shutdown(&mut self, give_up: Instant, wait_until: Instant) -> Result<(), SinkError> {
        let (ack, done) = bounded(1);
        self.send(Msg::Shutdown(give_up, ack))?;
        self.tx = None;
        let result = done.recv_deadline(wait_until);
        if result.is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        result.map_err(|_| self.error("the worker did not finish by the shutdown deadline"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel makes the worker abandon what it holds and stop.
        self.tx = None;
        if self.join_on_drop {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn run<D: Delivery>(mut d: D, rx: Receiver<Msg>) {
    loop {
        d.tick(Instant::now());
        let msg = match d.wake_at() {
            Some(at) => rx.recv_deadline(at),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Events(events)) => d.accept(events),
            Ok(Msg::Flush(ack)) => {
                d.flush();
                let _ = ack.send(());
            }
            Ok(Msg::Shutdown(deadline, ack)) => {
                d.shutdown(deadline);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
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
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Delivery for Log {
        fn accept(&mut self, events: Vec<SharedEvent>) {
            self.0.lock().unwrap().push(format!("accept {}", events.len()));
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
        let mut w = Worker::start("test", Log(log.clone()), Queue::Bounded(4), true).unwrap();
        w.send_events(vec![crate::types::test_event("a").into(), crate::types::test_event("b").into()]).unwrap();
        w.flush(None).unwrap();
        let now = Instant::now();
        w.shutdown(now + Duration::from_secs(5), now + Duration::from_secs(6)).unwrap();
        assert_eq!(*log.lock().unwrap(), ["accept 2", "flush", "shutdown"]);
        assert!(w.send_events(vec![]).is_err(), "a shut down worker takes nothing");
    }

    #[test]
    fn a_dropped_handle_makes_the_delivery_abandon() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let w = Worker::start("test", Log(log.clone()), Queue::Unbounded, true).unwrap();
        w.send_events(vec![crate::types::test_event("a").into()]).unwrap();
        drop(w);
        assert_eq!(*log.lock().unwrap(), ["accept 1", "abandon"]);
    }
}
