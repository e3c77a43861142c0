//! HTTP/1.1 codec (sans-IO).
