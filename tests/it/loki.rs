//! The Loki push sink against an in-test push receiver (issue 6).
