//! `query conversation ID` over 1,000,000 interactions (issue 5). Filled in below.

fn main() {}
