//! Parameters of gated native-auth requests (form body and query string).
