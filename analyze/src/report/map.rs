//! The service map: a layered layout (clients left, backends right) drawn as SVG.
//!
//! Layers are longest paths from the sources after breaking cycles (edges found going back in a
//! depth-first search are reversed for layering only); the order inside each layer comes from
//! repeated barycentre sweeps, which reduce crossings; long edges get virtual nodes so that they
//! take part in the ordering.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{escape_html, human_count, human_ms};
use crate::model::{Analysis, Health};

const BOX_W: f64 = 210.0;
const BOX_H: f64 = 56.0;
const COL_W: f64 = 420.0;
const ROW_H: f64 = 110.0;
const MARGIN: f64 = 40.0;

/// Colour of a health status.
pub(crate) fn colour(h: Health) -> &'static str {
    match h {
        Health::Ok => "#2e9d52",
        Health::Warning => "#d99100",
        Health::Critical => "#d43c3c",
    }
}

/// Node positions: layer and order within the layer, for real and virtual nodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    /// Names of real nodes (index = node id).
    pub names: Vec<String>,
    /// Layer of each node (real nodes first, then virtual ones).
    pub layer: Vec<usize>,
    /// Position within its layer.
    pub pos: Vec<usize>,
    /// Number of nodes in each layer.
    pub layer_sizes: Vec<usize>,
    /// For each drawn edge (real ids): the chain of nodes it passes through.
    pub chains: Vec<Vec<usize>>,
}

/// Lays out a directed graph given as edges between names (self-loops ignored).
pub(crate) fn layout(names: &[String], edges: &[(usize, usize)]) -> Layout {
    let n = names.len();
    let edges: Vec<(usize, usize)> = {
        let set: BTreeSet<(usize, usize)> = edges
            .iter()
            .copied()
            .filter(|(a, b)| a != b && *a < n && *b < n)
            .collect();
        set.into_iter().collect()
    };
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in &edges {
        succ[a].push(b);
    }
    // Break cycles: edges closing a cycle in a DFS (in name order) are reversed for layering.
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut back: BTreeSet<(usize, usize)> = BTreeSet::new();
    let has_pred: Vec<bool> = {
        let mut v = vec![false; n];
        for &(_, b) in &edges {
            v[b] = true;
        }
        v
    };
    let roots: Vec<usize> = (0..n)
        .filter(|&v| !has_pred[v])
        .chain((0..n).filter(|&v| has_pred[v]))
        .collect();
    for r in roots {
        if state[r] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(r, 0)];
        state[r] = 1;
        while let Some(&mut (v, ref mut i)) = stack.last_mut() {
            if *i < succ[v].len() {
                let w = succ[v][*i];
                *i += 1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        back.insert((v, w));
                    }
                    _ => {}
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    let dag: Vec<(usize, usize)> = edges
        .iter()
        .map(|&(a, b)| {
            if back.contains(&(a, b)) {
                (b, a)
            } else {
                (a, b)
            }
        })
        .collect();
    // Longest path layering (Kahn order).
    let mut indeg = vec![0usize; n];
    let mut dsucc: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in &dag {
        indeg[b] += 1;
        dsucc[a].push(b);
    }
    let mut layer = vec![0usize; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    while let Some(v) = queue.pop_front() {
        for &w in &dsucc[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            indeg[w] -= 1;
            if indeg[w] == 0 {
                queue.push_back(w);
            }
        }
    }
    // Virtual nodes on edges spanning several layers.
    let mut chains = Vec::new();
    let mut all_layer = layer.clone();
    let mut seg_edges: Vec<(usize, usize)> = Vec::new();
    for &(a, b) in &edges {
        let (u, v) = if back.contains(&(a, b)) {
            (b, a)
        } else {
            (a, b)
        };
        let mut chain = vec![u];
        let mut prev = u;
        for l in (layer[u] + 1)..layer[v] {
            let id = all_layer.len();
            all_layer.push(l);
            seg_edges.push((prev, id));
            chain.push(id);
            prev = id;
        }
        seg_edges.push((prev, v));
        chain.push(v);
        if back.contains(&(a, b)) {
            chain.reverse();
        }
        chains.push(chain);
    }
    let total = all_layer.len();
    let layers = all_layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for v in 0..total {
        order[all_layer[v]].push(v); // real nodes in name order, then virtual ones
    }
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); total];
    for &(a, b) in &seg_edges {
        down[a].push(b);
        up[b].push(a);
    }
    let mut pos = vec![0usize; total];
    let set_pos = |order: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
        for l in order {
            for (i, &v) in l.iter().enumerate() {
                pos[v] = i;
            }
        }
    };
    set_pos(&order, &mut pos);
    let mut best = order.clone();
    let mut best_cross = crossings(&order, &seg_edges, &all_layer, &pos);
    for sweep in 0..12 {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> = if downward {
            (1..layers).collect()
        } else {
            (0..layers.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let nb = if downward { &up } else { &down };
            let mut keyed: Vec<(f64, usize, usize)> = order[l]
                .iter()
                .map(|&v| {
                    let ns = &nb[v];
                    let bary = if ns.is_empty() {
                        pos[v] as f64
                    } else {
                        ns.iter().map(|&w| pos[w] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (bary, pos[v], v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            order[l] = keyed.into_iter().map(|k| k.2).collect();
            for (i, &v) in order[l].iter().enumerate() {
                pos[v] = i;
            }
        }
        let c = crossings(&order, &seg_edges, &all_layer, &pos);
        if c < best_cross {
            best_cross = c;
            best = order.clone();
        }
    }
    set_pos(&best, &mut pos);
    Layout {
        names: names.to_vec(),
        layer: all_layer,
        pos,
        layer_sizes: best.iter().map(Vec::len).collect(),
        chains,
    }
}

/// Crossings between consecutive layers.
pub(crate) fn crossings(
    order: &[Vec<usize>],
    seg_edges: &[(usize, usize)],
    layer: &[usize],
    pos: &[usize],
) -> usize {
    let mut by_layer: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for &(a, b) in seg_edges {
        let (a, b) = if layer[a] <= layer[b] { (a, b) } else { (b, a) };
        by_layer.entry(layer[a]).or_default().push((pos[a], pos[b]));
    }
    let _ = order;
    let mut c = 0;
    for es in by_layer.values() {
        for i in 0..es.len() {
            for j in (i + 1)..es.len() {
                let (a, b) = es[i];
                let (x, y) = es[j];
                if (a < x && b > y) || (a > x && b < y) {
                    c += 1;
                }
            }
        }
    }
    c
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Renders the service map of `a` as an inline SVG element.
pub(crate) fn render(a: &Analysis) -> String {
    // One drawn edge per client/server pair; protocols listed in its label.
    struct Pair {
        status: Health,
        lines: Vec<String>,
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut pairs: BTreeMap<(&str, &str), Pair> = BTreeMap::new();
    let secs = a.window_secs();
    for e in &a.edges {
        names.insert(&e.client);
        names.insert(&e.server);
        let p = pairs
            .entry((e.client.as_str(), e.server.as_str()))
            .or_insert(Pair {
                status: Health::Ok,
                lines: Vec::new(),
            });
        p.status = p.status.max(e.status);
        let err = if e.requests > 0 {
            format!("{:.1}% err", e.errors as f64 * 100.0 / e.requests as f64)
        } else {
            String::new()
        };
        p.lines.push(format!(
            "{} · {}/s",
            e.protocol,
            human_count(e.requests as f64 / secs)
        ));
        let mut parts: Vec<String> = Vec::new();
        if e.p99_ms.is_some() {
            parts.push(format!("p99 {}", human_ms(e.p99_ms)));
        }
        if !err.is_empty() && e.errors > 0 {
            parts.push(err);
        }
        if e.failed_connections > 0 {
            parts.push(format!("{} failed conn", e.failed_connections));
        }
        if !parts.is_empty() {
            p.lines.push(parts.join(" · "));
        }
    }
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let pair_list: Vec<((usize, usize), &Pair)> = pairs
        .iter()
        .map(|((c, s), p)| ((index[c], index[s]), p))
        .collect();
    let edge_ids: Vec<(usize, usize)> = pair_list.iter().map(|(k, _)| *k).collect();
    let lay = layout(&names, &edge_ids);
    let max_rows = lay.layer_sizes.iter().copied().max().unwrap_or(1).max(1);
    let layers = lay.layer_sizes.len().max(1);
    let width = MARGIN * 2.0 + (layers as f64 - 1.0) * COL_W + BOX_W;
    let height = MARGIN * 2.0 + (max_rows as f64 - 1.0) * ROW_H + BOX_H + 30.0;
    let centre = |v: usize| -> (f64, f64) {
        let l = lay.layer[v];
        let rows = lay.layer_sizes.get(l).copied().unwrap_or(1) as f64;
        let top = MARGIN + ((max_rows as f64 - rows) * ROW_H) / 2.0;
        (
            MARGIN + l as f64 * COL_W + BOX_W / 2.0,
            top + lay.pos[v] as f64 * ROW_H + BOX_H / 2.0,
        )
    };
    let svc_status: BTreeMap<&str, (Health, String)> = a
        .services
        .iter()
        .map(|s| {
            let sub = if s.requests > 0 {
                format!(
                    "{}/s · p99 {} · {:.1}% err",
                    human_count(s.requests as f64 / secs),
                    human_ms(s.p99_ms),
                    s.error_rate * 100.0
                )
            } else if s.requests_sent > 0 {
                format!(
                    "client · {}/s out",
                    human_count(s.requests_sent as f64 / secs)
                )
            } else {
                "no requests seen".to_string()
            };
            (s.service.as_str(), (s.status, sub))
        })
        .collect();

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"service-map\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" \
         height=\"{height:.0}\" style=\"max-width:100%;height:auto\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" \
         aria-label=\"Service map\">\n<defs>"
    );
    for h in [Health::Ok, Health::Warning, Health::Critical] {
        let _ = write!(
            svg,
            "<marker id=\"arrow-{}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
             markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" \
             fill=\"{}\"/></marker>",
            h.name(),
            colour(h)
        );
    }
    svg.push_str("</defs>\n");
    if names.is_empty() {
        svg.push_str(
            "<text x=\"40\" y=\"40\" class=\"muted\">No connections between services were \
             seen.</text>",
        );
    }
    // Edges under the nodes, labels above everything.
    let mut labels = String::new();
    // The layout's chains by their real end nodes (it leaves out self-loops, so positions
    // do not line up with `pair_list`).
    let chain_of: BTreeMap<(usize, usize), &Vec<usize>> = lay
        .chains
        .iter()
        .filter_map(|c| Some(((*c.first()?, *c.last()?), c)))
        .collect();
    for ((a, b), pair) in pair_list.iter() {
        let Some(chain) = chain_of.get(&(*a, *b)) else {
            continue; // a service calling itself: not drawn
        };
        let pts: Vec<(f64, f64)> = chain.iter().map(|&v| centre(v)).collect();
        if pts.len() < 2 {
            continue;
        }
        let (first, last) = (pts[0], pts[pts.len() - 1]);
        let forward = last.0 > first.0;
        let mut d = String::new();
        let half = BOX_W / 2.0;
        let start = if forward {
            (first.0 + half, first.1)
        } else {
            (first.0 - half, first.1)
        };
        let end = if forward {
            (last.0 - half - 2.0, last.1)
        } else {
            (last.0 + half + 2.0, last.1)
        };
        let mut path_pts = vec![start];
        path_pts.extend_from_slice(&pts[1..pts.len() - 1]);
        path_pts.push(end);
        let _ = write!(d, "M{:.1},{:.1}", path_pts[0].0, path_pts[0].1);
        for w in path_pts.windows(2) {
            let (p, q) = (w[0], w[1]);
            let mx = (p.0 + q.0) / 2.0;
            let _ = write!(
                d,
                " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                mx, p.1, mx, q.1, q.0, q.1
            );
        }
        let c = colour(pair.status);
        let _ = writeln!(
            svg,
            "<path class=\"edge\" d=\"{d}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" \
             marker-end=\"url(#arrow-{})\"/>",
            pair.status.name()
        );
        // Label near the middle of the path.
        let mid = if path_pts.len() > 2 {
            path_pts[path_pts.len() / 2]
        } else {
            ((start.0 + end.0) / 2.0, (start.1 + end.1) / 2.0)
        };
        let n = pair.lines.len() as f64;
        for (i, line) in pair.lines.iter().enumerate() {
            let y = mid.1 - 6.0 - (n - 1.0 - i as f64) * 14.0;
            let _ = writeln!(
                labels,
                "<text class=\"edge-label\" x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
                 fill=\"{c}\">{}</text>",
                mid.0,
                escape_html(&truncate(line, 40))
            );
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (cx, cy) = centre(i);
        let (status, sub) = svc_status
            .get(name.as_str())
            .cloned()
            .unwrap_or((Health::Ok, String::new()));
        let c = colour(status);
        let _ = writeln!(
            svg,
            "<g class=\"node {}\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{BOX_W}\" \
             height=\"{BOX_H}\" rx=\"8\" fill=\"#fff\" stroke=\"{c}\" stroke-width=\"2.5\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"{BOX_H}\" rx=\"3\" fill=\"{c}\"/>\
             <text class=\"node-name\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <text class=\"node-sub\" x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            status.name(),
            escape_html(name),
            cx - BOX_W / 2.0,
            cy - BOX_H / 2.0,
            cx - BOX_W / 2.0,
            cy - BOX_H / 2.0,
            cx - BOX_W / 2.0 + 16.0,
            cy - 4.0,
            escape_html(&truncate(name, 26)),
            cx - BOX_W / 2.0 + 16.0,
            cy + 15.0,
            escape_html(&truncate(&sub, 34)),
        );
    }
    svg.push_str(&labels);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn edge(client: &str, server: &str, status: Health) -> crate::EdgeStats {
        crate::EdgeStats {
            client: client.into(),
            server: server.into(),
            protocol: "http".into(),
            connections: 1,
            failed_connections: 0,
            requests: 10,
            errors: 0,
            p50_ms: Some(1.0),
            p95_ms: Some(2.0),
            p99_ms: Some(3.0),
            retransmits: 0,
            bytes_sent: 100,
            bytes_received: 200,
            status,
            reasons: Vec::new(),
            rate_per_s: 1.0,
            server_p50_ms: None,
            server_p99_ms: None,
        }
    }

    #[test]
    fn a_service_calling_itself_is_left_out_of_the_map() {
        // The self-loop sorts between the other pairs: every edge after it must still be
        // drawn with its own chain (once, a panic: the layout leaves self-loops out).
        let a = Analysis {
            edges: vec![
                edge("client", "nginx", Health::Ok),
                edge("nginx", "api", Health::Critical),
                edge("nginx", "nginx", Health::Ok),
                edge("nginx", "zeta", Health::Warning),
            ],
            window_start_ns: 0,
            window_end_ns: 10_000_000_000,
            ..Default::default()
        };
        let svg = render(&a);
        assert!(svg.contains("marker-end=\"url(#arrow-critical)\""), "{svg}");
        assert!(svg.contains("marker-end=\"url(#arrow-warning)\""), "{svg}");
    }

    #[test]
    fn layers_follow_longest_paths() {
        // curl → nginx → api → redis, api → postgres, curl → api (a shortcut).
        let n = names(&["api", "curl", "nginx", "postgres", "redis"]);
        let e = [(1, 2), (2, 0), (0, 4), (0, 3), (1, 0)];
        let l = layout(&n, &e);
        assert_eq!(&l.layer[..5], &[2, 0, 1, 3, 3]);
        assert_eq!(l.layer_sizes.len(), 4);
        // The shortcut curl → api passes through one virtual node in layer 1.
        let shortcut = l
            .chains
            .iter()
            .find(|c| c[0] == 1 && c[c.len() - 1] == 0)
            .expect("edge");
        assert_eq!(shortcut.len(), 3);
        assert_eq!(l.layer[shortcut[1]], 1);
    }

    #[test]
    fn cycles_do_not_hang_and_still_layer() {
        let n = names(&["a", "b", "c"]);
        let l = layout(&n, &[(0, 1), (1, 2), (2, 0), (1, 1)]);
        assert_eq!(l.layer_sizes.iter().sum::<usize>(), l.layer.len());
        assert!(l.layer[..3].contains(&0));
    }

    #[test]
    fn barycentres_remove_avoidable_crossings() {
        // Two independent chains given in an order that crosses: a→y, b→x with x<y by name.
        let n = names(&["a", "b", "x", "y"]);
        let e = [(0, 3), (1, 2)];
        let l = layout(&n, &e);
        // After ordering, a and y share a row index, and b and x do.
        assert_eq!(l.pos[0], l.pos[3]);
        assert_eq!(l.pos[1], l.pos[2]);
    }
}
