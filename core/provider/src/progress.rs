//! What a long operation is doing now, and where its time went: provider code names each step it
//! enters with [`step`] ("loading KVM", "starting the libvirt daemons"), and the engine runs every
//! operation inside [`Steps::run`], reading the current step for its progress lines ("Still
//! creating... [1m10s elapsed, waiting for libvirtd's first answer]") and the time of each step when
//! the operation ends.
//!
//! Steps are recorded for the thread the operation runs on (the provider calls block), so code that
//! names a step needs no handle passed down to it; outside [`Steps::run`], [`step`] does nothing.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Log {
    current: Option<(String, Instant)>,
    /// Finished steps in order; a step entered again right after itself is one step.
    done: Vec<(String, Duration)>,
}

impl Log {
    fn finish_current(&mut self) {
        if let Some((name, since)) = self.current.take() {
            let took = since.elapsed();
            match self.done.last_mut() {
                Some((last, d)) if *last == name => *d += took,
                _ => self.done.push((name, took)),
            }
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Mutex<Log>>>> = const { RefCell::new(None) };
}

/// The steps of one operation. Cloning shares them (the thread that runs it and the one that
/// reports its progress).
#[derive(Clone, Debug, Default)]
pub struct Steps(Arc<Mutex<Log>>);

impl Steps {
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on this thread with its [`step`]s recorded here; the last step ends with it.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let outer = CURRENT.with(|c| c.replace(Some(self.0.clone())));
        let result = f();
        self.log().finish_current();
        CURRENT.with(|c| *c.borrow_mut() = outer);
        result
    }

    /// The step under way and how long it has been at it.
    pub fn current(&self) -> Option<(String, Duration)> {
        self.log().current.as_ref().map(|(name, since)| (name.clone(), since.elapsed()))
    }

    /// Every finished step with its time, in order (the one under way not included).
    pub fn timings(&self) -> Vec<(String, Duration)> {
        self.log().done.clone()
    }
}

/// Enters the step `name` of the operation running on this thread (ending the one before).
pub fn step(name: impl Into<String>) {
    CURRENT.with(|c| {
        if let Some(log) = c.borrow().as_ref() {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.finish_current();
            log.current = Some((name.into(), Instant::now()));
        }
    });
}

/// `loading KVM 1s, starting the libvirt daemons 3s`: timings as a person reads them, steps under
/// 100 ms left out.
pub fn describe(timings: &[(String, Duration)]) -> String {
    timings
        .iter()
        .filter(|(_, d)| *d >= Duration::from_millis(100))
        .map(|(name, d)| format!("{name} {}", crate::guest::human_duration(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_timed_in_order_and_repeats_merge() {
        let steps = Steps::new();
        let seen = steps.run(|| {
            step("one");
            std::thread::sleep(Duration::from_millis(20));
            step("two");
            step("two");
            std::thread::sleep(Duration::from_millis(20));
            steps.current().map(|(n, _)| n)
        });
        assert_eq!(seen.as_deref(), Some("two"));
        let t = steps.timings();
        assert_eq!(t.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert!(t.iter().all(|(_, d)| *d >= Duration::from_millis(20)), "{t:?}");
        assert_eq!(steps.current(), None, "the last step ends with the operation");
    }

    #[test]
    fn a_step_outside_an_operation_goes_nowhere() {
        step("lost");
        let steps = Steps::new();
        steps.run(|| {});
        assert!(steps.timings().is_empty());
    }
}
