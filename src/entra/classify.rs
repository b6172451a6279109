//! Endpoint classification of native-auth request paths.
