//! Loading a snapshot into the engine: running allocations (held GPUs, budgets, what
//! preemption may evict), the jobs to place, and the reservations carried from earlier
//! rounds.

use super::*;

impl Engine<'_> {
    pub(super) fn load_running(&mut self, ns_index: &BTreeMap<&str, u32>) -> Result<(), SnapshotError> {
        let mut held_mask = vec![0u64; self.fleet.nodes.len()];
        let snap = self.snap;
        let budget_index: BTreeMap<&str, u32> = snap
            .budgets
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), idx(i)))
            .collect();
        self.budgets = snap
            .budgets
            .iter()
            .map(|(key, &min)| Budget { key, min, healthy: 0 })
            .collect();
        for (ai, r) in self.snap.running.iter().enumerate() {
            let bad = || SnapshotError::BadAllocation(r.job.clone());
            let provider = self.fleet.provider_index(&r.provider).ok_or_else(bad)?;
            let mut held: BTreeMap<u32, u64> = BTreeMap::new();
            for gpu in &r.gpus {
                let n = self.fleet.node_index(provider, &gpu.node).ok_or_else(bad)?;
                let node = &self.fleet.nodes[n as usize];
                let bit = 1u64 << gpu.gpu.min(63);
                if gpu.gpu >= node.gpus || node.free & bit != 0 || held_mask[n as usize] & bit != 0 {
                    return Err(bad());
                }
                held_mask[n as usize] |= bit;
                *held.entry(n).or_default() |= bit;
            }
            let ns = ns_index.get(r.namespace.as_str()).copied().unwrap_or(0);
            let spread = self.spreads.of_running(r);
            if let Some(key) = spread {
                self.spreads.count(key, provider, true);
            }
            for (&n, &mask) in &held {
                let model = self.node_model(n);
                self.queue.charge(ns, model, i64::from(mask.count_ones()));
            }
            let budget = r.budget.as_deref().and_then(|k| budget_index.get(k).copied());
            // CPU and memory on nodes the fleet no longer offers are nobody's to give back.
            let res = r
                .resources
                .iter()
                .filter_map(|(node, res)| Some((self.fleet.node_index(provider, node)?, *res)))
                .collect();
            if let Some(b) = budget.filter(|_| !r.evicting) {
                self.budgets[b as usize].healthy += 1;
            }
            self.allocs.push(AllocSt {
                src: idx(ai),
                provider,
                ns,
                priority: r.priority,
                start: r.start_time,
                held: held.into_iter().collect(),
                res,
                evicted: r.evicting,
                spread,
                budget,
            });
        }
        Ok(())
    }

    pub(super) fn load_jobs(&mut self, ns_index: &BTreeMap<&str, u32>) {
        let jobs = &self.snap.jobs;
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| {
            (jobs[a].submit_time, &jobs[a].id, a).cmp(&(jobs[b].submit_time, &jobs[b].id, b))
        });
        // Membership only (never iterated), so a hash set keeps decisions deterministic.
        let mut seen: HashSet<&str, FxBuild> =
            HashSet::with_capacity_and_hasher(jobs.len(), FxBuild::default());
        let mut tenant_sets: BTreeMap<&str, Option<Vec<u64>>> = BTreeMap::new();
        for i in order {
            let job = &jobs[i];
            let check = if seen.insert(job.id.as_str()) {
                validate(job)
            } else {
                Err(InvalidJob::Duplicate)
            };
            if let Err(e) = check {
                self.out.unplaced.push(Unplaced {
                    job: job.id.clone(),
                    explanation: Explanation::Invalid(e),
                });
                continue;
            }
            let h = idx(self.jobs.len());
            let ns = ns_index.get(job.namespace.as_str()).copied().unwrap_or(0);
            let tenants = tenant_sets
                .entry(job.namespace.as_str())
                .or_insert_with(|| tenant_set(&self.fleet, &job.namespace));
            let js = JobSt::resolve(&self.fleet, job, idx(i), tenants.as_deref());
            let victims = self.victims_key(job, ns);
            let shape = self.memo.intern(Shape::of(&js, victims));
            self.job_shape.push(shape);
            self.job_spread.push(self.spreads.of_job(job));
            self.jobs.push(js);
            self.job_ns.push(ns);
            self.queue.push(ns, job.priority, h);
        }
    }

    pub(super) fn load_reservations(&mut self) {
        let handles: BTreeMap<&str, u32> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(h, j)| (self.snap.jobs[j.src as usize].id.as_str(), idx(h)))
            .collect();
        for r in &self.snap.reservations {
            if self.reserved.len() >= self.cfg.max_reservations {
                break;
            }
            let (Some(&h), Some(p)) = (
                handles.get(r.job.as_str()),
                self.fleet.provider_index(&r.provider),
            ) else {
                continue;
            };
            if self.reserved.contains_key(&h) {
                continue;
            }
            let mut nodes = Vec::new();
            for name in &r.nodes {
                // Only nodes the job may still use: the others would be hidden from the
                // jobs before it in the queue for nothing ([`Engine::maybe_reserve`] drops
                // them when its turn comes).
                if let Some(n) = self.fleet.node_index(p, name)
                    && self.fleet.nodes[n as usize].reserved_for.is_none()
                    && reserve::usable(&self.fleet, &self.jobs[h as usize], n)
                {
                    self.fleet.reserve(n, h);
                    nodes.push(n);
                }
            }
            if !nodes.is_empty() {
                self.reserved.insert(h, nodes);
            }
        }
    }
}
