//! Pure: which ready replicas retire first, so that those that stay are spread over
//! failure domains as evenly as they can be — as a ReplicaSet scales down from its most
//! crowded nodes. Without it, scaling `a, a, b` down by one retired the newest (`b`) and
//! left both replicas on one provider, one outage from none.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use gpufed_api::service::ServiceSpread;

/// Provider name → region (`GpuProvider.spec.region`), for `spread: Region`.
pub type Regions = BTreeMap<String, String>;

/// The failure domain of placed replicas under a service's `spread`.
pub struct Domains<'a> {
    spread: ServiceSpread,
    regions: &'a Regions,
}

impl<'a> Domains<'a> {
    /// Domains for `spread`, regions looked up in `regions`.
    pub fn new(spread: ServiceSpread, regions: &'a Regions) -> Self {
        Self { spread, regions }
    }

    /// `j`'s domain: its provider, or that provider's region. `None` when unplaced, when
    /// the region is unknown, or under `spread: None` (one domain for all).
    fn of(&self, j: &ComputeJob) -> Option<String> {
        let provider = &j.status.as_ref()?.placement.as_ref()?.provider;
        match self.spread {
            ServiceSpread::Provider => Some(provider.clone()),
            ServiceSpread::Region => self.regions.get(provider).cloned(),
            ServiceSpread::None => None,
        }
    }

    /// Picks `n` of `candidates` to retire, one at a time: the one whose domain holds the
    /// most of `staying` and of the candidates not yet picked, then the one `newer`
    /// ranks highest. `staying` are replicas that serve on whatever is picked.
    pub fn most_crowded<'j>(
        &self,
        candidates: Vec<&'j ComputeJob>,
        staying: &[&ComputeJob],
        n: usize,
        newer: impl Fn(&ComputeJob) -> u32,
    ) -> Vec<&'j ComputeJob> {
        let mut count = BTreeMap::<Option<String>, usize>::new();
        for j in staying {
            *count.entry(self.of(j)).or_default() += 1;
        }
        // Each candidate's domain and rank, looked up once.
        let mut left: Vec<(Option<String>, u32, &'j ComputeJob)> = candidates
            .into_iter()
            .map(|j| (self.of(j), newer(j), j))
            .collect();
        for (d, _, _) in &left {
            *count.entry(d.clone()).or_default() += 1;
        }
        let mut picked = Vec::new();
        while picked.len() < n {
            let Some((at, _)) = left
                .iter()
                .enumerate()
                .max_by_key(|(_, (d, rank, _))| (count.get(d).copied().unwrap_or(0), *rank))
            else {
                break;
            };
            let (d, _, j) = left.swap_remove(at);
            if let Some(c) = count.get_mut(&d) {
                *c -= 1;
            }
            picked.push(j);
        }
        picked
    }
}
