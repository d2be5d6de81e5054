//! Time series of levels (outstanding bytes, RSS, cgroup usage) on one grid shared by all,
//! in bounded memory: the grid starts at the first profile event with buckets of a second
//! and doubles its bucket width whenever the capture outgrows [`MAX_BUCKETS`]; each series
//! follows lazily (the last value of each merged bucket is kept, a level at the bucket's end).
//! Series on one grid line up, so they can be summed.

/// Buckets of a series, at most.
pub const MAX_BUCKETS: usize = 240;
const FIRST_WIDTH_NS: u64 = 1_000_000_000;

/// The shared time grid.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// Start, wall ns (the first event's second).
    pub t0: Option<u64>,
    /// Bucket width, ns.
    pub width: u64,
}

impl Default for Grid {
    fn default() -> Self {
        Self {
            t0: None,
            width: FIRST_WIDTH_NS,
        }
    }
}

impl Grid {
    /// The bucket of `ts`, widening the grid when needed. Times before the start fall in
    /// the first bucket.
    pub(crate) fn index(&mut self, ts: u64) -> usize {
        let t0 = *self.t0.get_or_insert(ts - ts % FIRST_WIDTH_NS);
        loop {
            let i = (ts.saturating_sub(t0) / self.width) as usize;
            if i < MAX_BUCKETS {
                return i;
            }
            self.width = self.width.saturating_mul(2);
        }
    }

    /// Start of bucket `i`, wall ns.
    pub(crate) fn start_of(&self, i: usize) -> u64 {
        self.t0
            .unwrap_or(0)
            .saturating_add(self.width.saturating_mul(i as u64))
    }
}

/// A level over time: the value at the end of each bucket, carried forward between changes.
/// `NaN` before the first value when the series has no natural zero (RSS).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Level {
    width: u64,
    vals: Vec<f64>,
    before: f64,
}

impl Level {
    /// A series whose value before the first change is `before` (0 or NaN).
    pub(crate) fn new(before: f64) -> Self {
        Self {
            width: FIRST_WIDTH_NS,
            vals: Vec::new(),
            before,
        }
    }

    fn rescale(&mut self, width: u64) {
        if width <= self.width || self.width == 0 {
            self.width = width.max(self.width);
            return;
        }
        let f = (width / self.width).max(1) as usize;
        self.vals = self
            .vals
            .chunks(f)
            .filter_map(|c| c.last().copied())
            .collect();
        self.width = width;
    }

    fn last(&self) -> f64 {
        self.vals.last().copied().unwrap_or(self.before)
    }

    /// Sets the level at `ts` to `v`.
    pub(crate) fn set(&mut self, grid: &mut Grid, ts: u64, v: f64) {
        let i = grid.index(ts);
        self.rescale(grid.width);
        self.fill_to(i + 1);
        self.vals[i] = v;
    }

    fn fill_to(&mut self, n: usize) {
        let last = self.last();
        if self.vals.len() < n {
            self.vals.resize(n, last);
        }
    }

    /// The series on the grid's final width, `n` buckets long (carried forward).
    pub(crate) fn finish(&mut self, grid: &Grid, n: usize) {
        self.rescale(grid.width);
        self.fill_to(n);
        self.vals.truncate(n);
    }

    /// The values, one per bucket.
    pub fn values(&self) -> &[f64] {
        &self.vals
    }

    /// Adds `other` bucket by bucket (both finished on the same grid); NaN counts as 0 once
    /// either side has a value.
    pub(crate) fn add(&mut self, other: &Level) {
        if self.vals.len() < other.vals.len() {
            self.vals.resize(other.vals.len(), self.before);
        }
        for (a, b) in self.vals.iter_mut().zip(&other.vals) {
            *a = match (a.is_nan(), b.is_nan()) {
                (true, true) => f64::NAN,
                (true, false) => *b,
                (false, true) => *a,
                (false, false) => *a + b,
            };
        }
    }
}

/// A least-squares line through points `(x, y)`: slope and the coefficient of determination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Slope, y units per x unit.
    pub slope: f64,
    /// R², 0 to 1 (1 when y does not vary and the line is flat).
    pub r2: f64,
}

/// Fits a line to the points whose `y` is not NaN (none with fewer than 2 of them).
pub fn linear_fit(points: impl Iterator<Item = (f64, f64)>) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = points.filter(|p| !p.1.is_nan()).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Fit { slope, r2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_doubles_and_series_keep_the_last_value_of_merged_buckets() {
        let mut g = Grid::default();
        let mut s = Level::new(0.0);
        let t0 = 1_000_000_000_000u64;
        for i in 0..(MAX_BUCKETS as u64 * 3) {
            s.set(&mut g, t0 + i * 1_000_000_000 + 500, i as f64);
        }
        assert_eq!(g.width, 4_000_000_000);
        let n = g.index(t0 + (MAX_BUCKETS as u64 * 3 - 1) * 1_000_000_000) + 1;
        s.finish(&g, n);
        assert_eq!(s.values().len(), n);
        // Bucket k holds seconds 4k..4k+3: its last value is 4k+3.
        assert_eq!(s.values()[0], 3.0);
        assert_eq!(s.values()[10], 43.0);
    }

    #[test]
    fn fit_recovers_a_line_and_flags_noise() {
        let f = linear_fit((0..50).map(|i| (i as f64, 3.0 * i as f64 + 7.0))).expect("a fit");
        assert!((f.slope - 3.0).abs() < 1e-9 && f.r2 > 0.999);
        let noisy = (0..50).map(|i| (i as f64, if i % 2 == 0 { 0.0 } else { 100.0 }));
        assert!(linear_fit(noisy).expect("a fit").r2 < 0.1);
        assert!(linear_fit([(1.0, f64::NAN), (2.0, 1.0)].into_iter()).is_none());
    }
}
