//! An upstream native-auth answer: flow learning and what reaches the store.
//! The invariants: `otpgate::fuzz_checks::learn_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::learn_response(data));
