//! A set of line numbers kept as sorted, merged ranges: an import of a million lines in
//! batches records a few thousand ranges, not a million numbers.

use serde::{Deserialize, Serialize};

/// Line numbers (1-based), as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LineSet(Vec<(u64, u64)>);

/// Read back from a journal, which a person may have edited: ranges are put in order
/// and merged again, reversed ones dropped.
impl<'de> Deserialize<'de> for LineSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut set = Self::default();
        for (start, end) in Vec::<(u64, u64)>::deserialize(d)? {
            if start <= end {
                set.insert_range(start, end);
            }
        }
        Ok(set)
    }
}

impl LineSet {
    /// The set of `lines` (in any order).
    pub fn of(lines: impl IntoIterator<Item = u64>) -> Self {
        let mut set = Self::default();
        for line in lines {
            set.insert_range(line, line);
        }
        set
    }

    pub fn contains(&self, line: u64) -> bool {
        let at = self.0.partition_point(|&(_, end)| end < line);
        self.0.get(at).is_some_and(|&(start, _)| start <= line)
    }

    /// How many lines the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(s, e)| e - s + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every line of the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(s, e)| s..=e)
    }

    /// Adds every line of `other`.
    pub fn extend(&mut self, other: &LineSet) {
        for &(s, e) in &other.0 {
            self.insert_range(s, e);
        }
    }

    /// Adds `start..=end`, merging with the ranges it touches.
    fn insert_range(&mut self, start: u64, end: u64) {
        // Appending in order, the common case, is O(1).
        if let Some(last) = self.0.last_mut() {
            if start > last.1.saturating_add(1) {
                self.0.push((start, end));
                return;
            }
            if start >= last.0 {
                last.1 = last.1.max(end);
                return;
            }
        }
        let first = self
            .0
            .partition_point(|&(_, e)| e.saturating_add(1) < start);
        let mut last = first;
        let (mut s, mut e) = (start, end);
        while last < self.0.len() && self.0[last].0 <= end.saturating_add(1) {
            s = s.min(self.0[last].0);
            e = e.max(self.0[last].1);
            last += 1;
        }
        self.0.splice(first..last, [(s, e)]);
    }
}

impl std::fmt::Display for LineSet {
    /// `3, 7-9, 12`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &(s, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if s == e {
                write!(f, "{s}")?;
            } else {
                write!(f, "{s}-{e}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_in_any_order() {
        let set = LineSet::of([5, 1, 2, 3, 9, 4, 11, 10]);
        assert_eq!(set.0, [(1, 5), (9, 11)]);
        assert_eq!(set.len(), 8);
        assert!(set.contains(1) && set.contains(5) && set.contains(10));
        assert!(!set.contains(6) && !set.contains(0) && !set.contains(12));
        assert_eq!(set.to_string(), "1-5, 9-11");
        let mut more = LineSet::of([7]);
        more.extend(&set);
        assert_eq!(more.0, [(1, 5), (7, 7), (9, 11)]);
        more.extend(&LineSet::of([6, 8]));
        assert_eq!(more.0, [(1, 11)]);
        assert_eq!(more.iter().count(), 11);
    }

    #[test]
    fn serialises_as_pairs() {
        let set = LineSet::of([1, 2, 4]);
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(text, "[[1,2],[4,4]]");
        assert_eq!(serde_json::from_str::<LineSet>(&text).unwrap(), set);
        let edited: LineSet = serde_json::from_str("[[4,4],[9,2],[1,2]]").unwrap();
        assert_eq!(edited, set);
    }
}
