//! The shared test scaffolding (`airlock-testkit`), under the name the north tests use.

#![allow(unused_imports)]

pub use airlock_testkit::*;
