//! A writer that hands its bytes to another thread: a part's tar stream (reading files,
//! digesting blocks) runs on one core while its encoder (compression, encryption) runs on
//! another. Without it the last part of a backup -- often one big relation file of an
//! incremental -- runs alone on one core while the others idle.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes handed over at once.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the threads (bounded: a slow encoder holds the writer back).
const DEPTH: usize = 4;

/// Writes into `W` on a thread of its own; [`Piped::finish`] returns `W` once everything
/// written reached it.
pub struct Piped<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    /// Emptied chunks coming back for reuse.
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> Piped<W> {
    /// Start the thread that writes into `inner`.
    ///
    /// # Errors
    /// [`io::Error`] when the thread cannot be started.
    pub fn new(mut inner: W) -> io::Result<Piped<W>> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back, spare) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let worker = std::thread::Builder::new().name("walvault-encode".into()).spawn(move || {
            for mut chunk in rx {
                inner.write_all(&chunk)?;
                chunk.clear();
                let _ = back.try_send(chunk);
            }
            Ok(inner)
        })?;
        Ok(Piped { buf: Vec::with_capacity(CHUNK), tx: Some(tx), spare, worker: Some(worker) })
    }

    /// Hand over what is buffered; the worker's own error if it stopped.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok()).unwrap_or(false);
        if sent { Ok(()) } else { Err(self.stopped()) }
    }

    /// The worker stopped early: its error.
    fn stopped(&mut self) -> io::Error {
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the encoding thread stopped"),
        }
    }

    /// Hand over the rest, wait for the thread and return the inner writer.
    ///
    /// # Errors
    /// The first error writing into the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the encoding thread panicked")),
            None => Err(io::Error::other("the encoding thread stopped")),
        }
    }
}

impl<W: Write + Send + 'static> Write for Piped<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tx.is_none() {
            return Err(io::Error::other("the encoding thread stopped"));
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Buffered bytes are handed over; they reach the inner writer by [`Piped::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl<W: Write + Send + 'static> Drop for Piped<W> {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): let the thread see the end and exit.
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_whole() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut p = Piped::new(Vec::new()).expect("thread");
        for piece in data.chunks(1000) {
            p.write_all(piece).expect("write");
        }
        p.flush().expect("flush");
        p.write_all(b"end").expect("write");
        let out = p.finish().expect("finish");
        assert_eq!(&out[..data.len()], &data[..]);
        assert_eq!(&out[data.len()..], b"end");
    }

    /// Accepts `left` bytes, then fails.
    #[derive(Debug)]
    struct Fails {
        left: usize,
    }

    impl Write for Fails {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_inner_writers_error_comes_back() {
        let mut p = Piped::new(Fails { left: CHUNK + 5 }).expect("thread");
        let big = vec![7u8; 64 * CHUNK];
        let e = p.write_all(&big).and_then(|()| p.finish().map(|_| ())).expect_err("must fail");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        // Small enough to stay buffered: the error surfaces at finish.
        let mut p = Piped::new(Fails { left: 3 }).expect("thread");
        p.write_all(b"0123456789").expect("buffered");
        assert_eq!(p.finish().expect_err("must fail").kind(), io::ErrorKind::StorageFull);
    }
}
