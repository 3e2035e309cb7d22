//! The two sides a deploy moves traffic between: two target groups behind one listener.

use serde::{Deserialize, Serialize};

/// One of the two target groups. Between deploys one is live and the other empty or warm; a
/// strategy that stands a new set beside the old brings it up on the other side, and they swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Blue,
    Green,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Blue, Side::Green];

    pub fn name(self) -> &'static str {
        match self {
            Side::Blue => "blue",
            Side::Green => "green",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blue" => Some(Side::Blue),
            "green" => Some(Side::Green),
            _ => None,
        }
    }

    pub fn other(self) -> Self {
        match self {
            Side::Blue => Side::Green,
            Side::Green => Side::Blue,
        }
    }

    /// `(a, b)` ordered as (blue, green) when `self` is the side `a` belongs to.
    pub fn blue_green<T>(self, mine: T, other: T) -> (T, T) {
        match self {
            Side::Blue => (mine, other),
            Side::Green => (other, mine),
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sides_pair_up() {
        for s in Side::BOTH {
            assert_eq!(Side::parse(s.name()), Some(s));
            assert_eq!(s.other().other(), s);
            assert_ne!(s.other(), s);
        }
        assert_eq!(Side::parse("purple"), None);
        assert_eq!(Side::Green.blue_green(1, 0), (0, 1));
        assert_eq!(Side::Blue.blue_green(1, 0), (1, 0));
        assert_eq!(
            serde_json::to_string(&Side::Green).ok().as_deref(),
            Some("\"green\"")
        );
    }
}
