//! The exit codes every command shares: 0 done, 1 failed or rolled back, 2 input refused,
//! 3 paused awaiting a human.

/// Input that cutover refuses: a bad stack file or bad arguments. Nothing was changed.
pub const INVALID: u8 = 2;
/// A deployment paused at a step; `promote`, `resume` or `abort` picks it up. (Only a run
/// that ends when its deployment pauses exits with it: `cutover aws deploy`.)
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub const PAUSED: u8 = 3;
