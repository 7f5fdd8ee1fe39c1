//! An in-memory provider: a fake hypervisor for tests and benchmarks
