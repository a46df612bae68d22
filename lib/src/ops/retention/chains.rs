//! Retention of incremental chains: a kept backup keeps every backup it builds on, so that no
//! prune ever leaves an incremental without its reference (the whole chain or none).

use std::collections::HashMap;

use crate::ops::retention::policy::Decision;

/// Keep the chain of every kept backup. `references[i]` is what `decisions[i]` builds on
/// (`None` for a full backup). A backup kept only for this says which backup needs it.
pub(super) fn keep_chains(decisions: &mut [Decision], references: &[Option<String>]) {
    let index: HashMap<String, usize> = decisions.iter().enumerate().map(|(i, d)| (d.name.clone(), i)).collect();
    // References point at older backups, but a fixpoint does not rely on it.
    for _ in 0..=decisions.len() {
        let mut changed = false;
        for i in (0..decisions.len()).rev() {
            if !decisions[i].keep {
                continue;
            }
            let Some(j) = references.get(i).and_then(Option::as_ref).and_then(|r| index.get(r)).copied() else {
                continue;
            };
            if !decisions[j].keep {
                let why = format!("{} builds on it (an incremental chain is kept whole)", decisions[i].name);
                decisions[j].keep = true;
                decisions[j].reason = why;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::ops::retention::policy::PrunePolicy;

    /// A history of backups, oldest first: each full, a diff (on the newest full) or an incr
    /// (on the newest backup), with its age in days.
    fn world() -> impl Strategy<Value = Vec<(u8, i64)>> {
        prop::collection::vec((0u8..3, 0i64..200), 1..25).prop_map(|mut v| {
            v[0].0 = 0;
            // Ages decrease: oldest first.
            let mut age = 400;
            for b in &mut v {
                age -= 1 + b.1 % 15;
                b.1 = age.max(0);
            }
            v
        })
    }

    fn references(kinds: &[(u8, i64)]) -> Vec<Option<String>> {
        let mut last_full = 0;
        let mut out = Vec::with_capacity(kinds.len());
        for (i, &(k, _)) in kinds.iter().enumerate() {
            out.push(match k {
                _ if i == 0 => None,
                0 => {
                    last_full = i;
                    None
                }
                1 => Some(format!("b{last_full}")),
                _ => Some(format!("b{}", i - 1)),
            });
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::wal::follow::model_cases()))]

        /// No prune leaves a kept backup without any backup of its chain; everything the
        /// policy keeps stays kept; nothing else is kept but chains.
        #[test]
        fn no_kept_incremental_loses_its_reference(
            w in world(),
            keep_last in 1usize..5,
            days in 1i64..120,
            pinned in prop::option::of(0usize..25),
        ) {
            let now: DateTime<Utc> = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
            let names: Vec<(String, DateTime<Utc>)> =
                w.iter().enumerate().map(|(i, (_, age))| (format!("b{i}"), now - Duration::days(*age))).collect();
            let keep = pinned.filter(|p| *p < w.len()).map(|p| vec![format!("b{p}")]).unwrap_or_default();
            let p = PrunePolicy { keep_last, backups: Duration::days(days), keep, ..PrunePolicy::default() };
            let policy = crate::ops::retention::plan::decide(&names, "database", p.backups, &p, now);
            let refs = references(&w);
            let mut d = policy.clone();
            keep_chains(&mut d, &refs);
            for (i, di) in d.iter().enumerate() {
                if policy[i].keep {
                    prop_assert!(di.keep);
                }
                if di.keep && let Some(r) = &refs[i] {
                    let j = names.iter().position(|(n, _)| n == r).unwrap_or(usize::MAX);
                    prop_assert!(d.get(j).is_some_and(|x| x.keep), "{} kept without {}", di.name, r);
                }
                if di.keep && !policy[i].keep {
                    prop_assert!(di.reason.contains("builds on it"), "{}", di.reason);
                    // Some kept backup's chain passes through it.
                    let needed = (0..d.len()).any(|k| policy[k].keep && chain(&refs, &names, k).contains(&i));
                    prop_assert!(needed, "{} kept for no chain", di.name);
                }
            }
        }
    }

    fn chain(refs: &[Option<String>], names: &[(String, DateTime<Utc>)], mut k: usize) -> Vec<usize> {
        let mut out = vec![k];
        while let Some(r) = &refs[k] {
            k = names.iter().position(|(n, _)| n == r).unwrap_or(0);
            out.push(k);
        }
        out
    }
}
