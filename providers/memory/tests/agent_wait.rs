//! Waiting for a booting guest's agent: a console that keeps printing keeps the wait going past its
//! quiet time, a console that goes quiet ends it, and the limit ends it whatever the console does.
//! The wait is nestform's real one (`nestform_agent::wait_for_agent`) over the memory provider,
//! whose guests' consoles print what the test says and whose agents answer when the test lets them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_provider::conformance;
use nestform_provider::{AgentError, AgentWait, GaveUp, GuestRef, Hypervisor, Provider};
use nestform_provider_memory::MemoryProvider;

const QUIET: Duration = Duration::from_millis(800);

/// A running guest `name` on `memory://h` whose agent does not answer yet.
fn booting(p: &MemoryProvider, name: &str) -> (Arc<dyn Hypervisor>, String) {
    let h = p.connect("memory://h").unwrap();
    let owner = conformance::sample_owner(&format!("nested_guest.{name}"));
    let id = h.create_guest(&conformance::sample_guest(name, &[], true), &owner).unwrap().id;
    p.fail_on("open_agent", name);
    (h, id)
}

/// Prints a line on `name`'s console every 200 ms until `stop` turns true.
fn kernel_printing(p: &MemoryProvider, name: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (p, name) = (p.clone(), name.to_string());
    std::thread::spawn(move || {
        let start = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            p.print_console(&name, &format!("[{:10.6}] still booting\n", start.elapsed().as_secs_f64()));
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

#[test]
fn a_guest_whose_console_keeps_printing_is_waited_for_past_the_quiet_time() {
    let p = MemoryProvider::new();
    let (h, id) = booting(&p, "slow");
    let stop = Arc::new(AtomicBool::new(false));
    let printer = kernel_printing(&p, "slow", stop.clone());
    // The agent comes up after three quiet times' worth of printing.
    let opener = {
        let p = p.clone();
        std::thread::spawn(move || {
            std::thread::sleep(QUIET * 3);
            p.heal("open_agent", "slow");
        })
    };
    let start = Instant::now();
    let wait = AgentWait { quiet: QUIET, limit: Duration::from_secs(60) };
    let reached = nestform_agent::wait_for_agent(&*h, GuestRef { id: &id, name: "slow" }, wait);
    let waited = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    printer.join().unwrap();
    opener.join().unwrap();
    let client =
        reached.unwrap_or_else(|e| panic!("a guest still printing was given up after {waited:?}: {e}"));
    assert!(waited >= QUIET * 3, "answered after {waited:?}, before its agent was up");
    client.facts().unwrap();
}

#[test]
fn a_guest_whose_console_went_quiet_is_given_up_with_its_console() {
    let p = MemoryProvider::new();
    let (h, id) = booting(&p, "stuck");
    let stop = Arc::new(AtomicBool::new(false));
    let printer = kernel_printing(&p, "stuck", stop.clone());
    std::thread::sleep(QUIET * 2);
    stop.store(true, Ordering::SeqCst);
    printer.join().unwrap();
    p.print_console("stuck", "Kernel panic - not syncing: VFS: Unable to mount root fs\n");

    let start = Instant::now();
    let wait = AgentWait { quiet: QUIET, limit: Duration::from_secs(60) };
    let Err(err) = nestform_agent::wait_for_agent(&*h, GuestRef { id: &id, name: "stuck" }, wait) else {
        panic!("a stuck guest's agent answered")
    };
    let waited = start.elapsed();
    let AgentError::Timeout { gave_up, ref console, .. } = err else {
        panic!("expected a timeout, got {err}")
    };
    assert_eq!(gave_up, GaveUp::Quiet(QUIET));
    assert!(waited >= QUIET && waited < Duration::from_secs(15), "gave up after {waited:?}");
    assert!(console.as_deref().is_some_and(|c| c.contains("Kernel panic")), "{console:?}");
    let text = err.to_string();
    assert!(text.contains("did not answer within 800ms of its console's last output"), "{text}");
}

#[test]
fn the_limit_ends_the_wait_while_the_console_still_prints() {
    let p = MemoryProvider::new();
    let (h, id) = booting(&p, "endless");
    let stop = Arc::new(AtomicBool::new(false));
    let printer = kernel_printing(&p, "endless", stop.clone());
    let start = Instant::now();
    let wait = AgentWait { quiet: QUIET, limit: QUIET * 4 };
    let Err(err) = nestform_agent::wait_for_agent(&*h, GuestRef { id: &id, name: "endless" }, wait) else {
        panic!("an endless guest's agent answered")
    };
    let waited = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    printer.join().unwrap();
    let AgentError::Timeout { gave_up, .. } = err else { panic!("expected a timeout, got {err}") };
    assert_eq!(gave_up, GaveUp::Limit);
    assert!(waited >= QUIET * 4 && waited < Duration::from_secs(15), "gave up after {waited:?}");
}
