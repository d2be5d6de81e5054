//! Reordering tables in place: a sorted copy of a table of millions of rows would double its
//! memory at the analysis' peak, so tables are sorted by small keys and then moved.

/// Applies the permutation `order` in place, through `swap`: afterwards position `k` holds
/// what was at `order[k]`. Each cycle of the permutation is followed once (`order` is used to
/// mark where it has been); `swap(a, b)` must swap positions `a` and `b` of every table that
/// moves together.
pub(crate) fn permute(mut order: Vec<u32>, mut swap: impl FnMut(usize, usize)) {
    const DONE: u32 = u32::MAX;
    for start in 0..order.len() {
        if order[start] == DONE {
            continue;
        }
        // Position `k` takes the element at `order[k]`; the one that was at `start` travels
        // along the cycle until its place comes.
        let mut k = start;
        loop {
            let from = order[k] as usize;
            order[k] = DONE;
            if from == start {
                break;
            }
            swap(k, from);
            k = from;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_element_reaches_its_place() {
        // Pseudo-random permutations of several sizes (cycles of every length), two tables
        // moved together.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in [0usize, 1, 2, 3, 7, 64, 1000] {
            let mut order: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut a: Vec<u64> = (0..n as u64).map(|i| i * 10).collect();
            let mut b: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            super::permute(order.clone(), |i, j| {
                a.swap(i, j);
                b.swap(i, j);
            });
            for (k, &from) in order.iter().enumerate() {
                assert_eq!(a[k], u64::from(from) * 10, "n {n}, position {k}");
                assert_eq!(b[k], from % 3 == 0, "n {n}, position {k}");
            }
        }
    }
}
