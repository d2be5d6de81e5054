//! fdatasync on a thread of its own, so that a writer never waits for the disk between two
//! blocks: a slow sync (a busy disk, a journal commit) would hold up the blocks behind it in
//! memory, where a `kill -9` loses them; written, they are in the page cache and survive
//! the process.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// What the writer and the sync thread share.
#[derive(Default)]
struct State {
    /// Syncs asked for so far.
    requested: u64,
    /// The request number the last finished sync covered.
    synced: u64,
    /// The first failure not reported yet.
    error: Option<io::Error>,
    /// The writer is done: sync what was asked for, then stop.
    closing: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Syncs one file's data in the background: [`Syncer::request`] after each write returns at
/// once; [`Syncer::wait`] returns when everything written before it is on disk.
pub(crate) struct Syncer {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for `file` (a handle of the file the writer writes).
    pub(crate) fn start(file: File) -> io::Result<Self> {
        let shared: Shared = Arc::default();
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("retrace-sync".into())
            .spawn(move || run(&file, &theirs))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a sync of everything written so far; returns an earlier sync's failure not
    /// reported yet.
    pub(crate) fn request(&self) -> io::Result<()> {
        let mut s = lock(&self.shared);
        s.requested += 1;
        self.shared.1.notify_all();
        s.error.take().map_or(Ok(()), Err)
    }

    /// Waits until everything written before this call is on disk.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let mut s = lock(&self.shared);
        s.requested += 1;
        let target = s.requested;
        self.shared.1.notify_all();
        while s.synced < target && s.error.is_none() {
            s = self
                .shared
                .1
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        s.error.take().map_or(Ok(()), Err)
    }

    /// Syncs what was asked for and stops the thread; returns a failure not reported yet.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.stop();
        lock(&self.shared).error.take().map_or(Ok(()), Err)
    }

    fn stop(&mut self) {
        lock(&self.shared).closing = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: one fdatasync per wakeup, covering every request made before it started.
fn run(file: &File, shared: &Shared) {
    loop {
        let target = {
            let mut s = lock(shared);
            while s.requested == s.synced && !s.closing {
                s = shared
                    .1
                    .wait(s)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if s.requested == s.synced {
                return; // closing, nothing left to sync
            }
            s.requested
        };
        let result = file.sync_data();
        let mut s = lock(shared);
        s.synced = target;
        if let Err(e) = result {
            s.error.get_or_insert(e);
        }
        shared.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn waits_cover_every_write_before_them_and_the_thread_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = File::create(&path).expect("create");
        let s = Syncer::start(f.try_clone().expect("clone")).expect("start");
        for i in 0..200u32 {
            f.write_all(&i.to_le_bytes()).expect("write");
            s.request().expect("request");
            if i % 50 == 0 {
                s.wait().expect("wait");
            }
        }
        s.wait().expect("wait");
        {
            let st = lock(&s.shared);
            assert_eq!(
                st.synced, st.requested,
                "the last wait covered every request"
            );
            assert!(st.requested >= 200);
        }
        s.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read").len(), 800);
    }

    #[test]
    fn a_failed_sync_is_reported_once() {
        // fdatasync of /dev/null fails (EINVAL): a stand-in for a disk error.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let s = Syncer::start(w).expect("start");
        assert!(s.wait().is_err(), "the failure reaches the writer");
        assert!(s.finish().is_ok(), "and is not reported twice");
    }
}
