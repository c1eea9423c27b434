//! The modelled network: links of fixed capacity (each direction its own link), flows over up
//! to four of them, advanced in fixed steps. Each step a flow gets the smallest of its links'
//! equal shares, then what its links still have goes to the flows that can still grow (two
//! rounds of max-min filling: no link ever carries more than its capacity, and a flow held back
//! elsewhere leaves its share to the others).
//!
//! A sender's last bytes may wait in socket buffers while the receiver's link drains them: a
//! flow started with `buffered` bytes leaves its first link (the sender's) once no more than
//! that is left, and says so ([`Network::step`]'s `released`), so an agent's upload slot frees
//! when its last chunk is written, as in the agent, not when the receiver has it.

/// A link's index in [`Network`].
pub type LinkId = u32;

/// What a flow carries; the simulation's own bookkeeping.
#[derive(Clone, Copy, Debug)]
pub enum Carries {
    /// The edge ingesting task `task` from the origin.
    Ingest { task: usize },
    /// Piece `index` of `task` to `host`, from `from`.
    Piece {
        host: usize,
        task: usize,
        index: u64,
        from: From,
    },
}

/// Where a piece comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Edge,
    Peer { host: usize, same_rack: bool },
}

struct Flow {
    links: [LinkId; 4],
    hops: u8,
    left: f64,
    rate: f64,
    /// Bytes that fit in the buffers past the first link; 0 once released.
    buffered: f64,
    released: bool,
    carries: Carries,
}

pub struct Network {
    capacity: Vec<f64>,
    flows: Vec<Flow>,
    /// Per link, this step: flows over it, and the rate they were given.
    count: Vec<u32>,
    used: Vec<f64>,
}

impl Network {
    pub fn new() -> Network {
        Network {
            capacity: Vec::new(),
            flows: Vec::new(),
            count: Vec::new(),
            used: Vec::new(),
        }
    }

    /// A link of `bytes_per_sec`.
    pub fn link(&mut self, bytes_per_sec: f64) -> LinkId {
        self.capacity.push(bytes_per_sec);
        self.count.push(0);
        self.used.push(0.0);
        (self.capacity.len() - 1) as LinkId
    }

    /// A flow of `bytes` over `path`; its last `buffered` bytes no longer need `path[0]`.
    pub fn start(&mut self, path: &[LinkId], bytes: f64, buffered: f64, carries: Carries) {
        let mut links = [0; 4];
        links[..path.len()].copy_from_slice(path);
        self.flows.push(Flow {
            links,
            hops: path.len() as u8,
            left: bytes,
            rate: 0.0,
            buffered,
            released: false,
            carries,
        });
    }

    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// Moves every flow on by `dt` seconds; `released` receives the flows whose sender is
    /// through (each flow once, at the latest when it ends), `done` the flows that ended, and
    /// `moved` each flow's bytes of this step.
    pub fn step(
        &mut self,
        dt: f64,
        released: &mut Vec<Carries>,
        done: &mut Vec<Carries>,
        mut moved: impl FnMut(&Carries, f64),
    ) {
        self.count.iter_mut().for_each(|c| *c = 0);
        self.used.iter_mut().for_each(|u| *u = 0.0);
        for f in &self.flows {
            for l in &f.links[..f.hops as usize] {
                self.count[*l as usize] += 1;
            }
        }
        for f in &mut self.flows {
            f.rate = f.links[..f.hops as usize]
                .iter()
                .map(|l| self.capacity[*l as usize] / self.count[*l as usize] as f64)
                .fold(f64::INFINITY, f64::min);
            for l in &f.links[..f.hops as usize] {
                self.used[*l as usize] += f.rate;
            }
        }
        // What each link has left goes, in equal shares, to the flows that can still grow
        // (every link of theirs has some left): a flow held back elsewhere takes none of it.
        let left = |f: &Flow, used: &[f64]| {
            f.links[..f.hops as usize]
                .iter()
                .all(|l| self.capacity[*l as usize] - used[*l as usize] > 1e-9)
        };
        self.count.iter_mut().for_each(|c| *c = 0);
        for f in &self.flows {
            if left(f, &self.used) {
                for l in &f.links[..f.hops as usize] {
                    self.count[*l as usize] += 1;
                }
            }
        }
        for f in &mut self.flows {
            if !left(f, &self.used) {
                continue;
            }
            f.rate += f.links[..f.hops as usize]
                .iter()
                .map(|l| {
                    let l = *l as usize;
                    (self.capacity[l] - self.used[l]) / self.count[l] as f64
                })
                .fold(f64::INFINITY, f64::min);
        }
        let mut i = 0;
        while i < self.flows.len() {
            let f = &mut self.flows[i];
            let bytes = (f.rate * dt).min(f.left);
            f.left -= bytes;
            moved(&f.carries, bytes);
            if !f.released && f.left <= f.buffered.max(0.5) {
                f.released = true;
                released.push(f.carries);
                if f.hops > 1 {
                    f.links.copy_within(1..f.hops as usize, 0);
                    f.hops -= 1;
                }
            }
            if f.left <= 0.5 {
                done.push(f.carries);
                self.flows.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network of links of these capacities, and their ids in the same order.
    fn network<const N: usize>(capacities: [f64; N]) -> (Network, [LinkId; N]) {
        let mut net = Network::new();
        let links = capacities.map(|bytes_per_sec| net.link(bytes_per_sec));
        (net, links)
    }

    /// Bytes each ingest task moves in one 1-second step, by task.
    fn moved_per_task<const N: usize>(net: &mut Network) -> [f64; N] {
        let mut moved = [0.0; N];
        net.step(1.0, &mut Vec::new(), &mut Vec::new(), |c, bytes| {
            if let Carries::Ingest { task } = c {
                moved[*task] += bytes;
            }
        });
        moved
    }

    #[test]
    fn flows_share_a_link_and_leave_the_rest_to_others() {
        let (mut net, [shared, narrow]) = network([100.0, 20.0]);
        // Two flows over `shared`, one of them also over `narrow`: that one gets 20, the other
        // the 80 left, not an equal 50.
        net.start(&[shared, narrow], 1e9, 0.0, Carries::Ingest { task: 0 });
        net.start(&[shared], 1e9, 0.0, Carries::Ingest { task: 1 });
        assert_eq!(moved_per_task(&mut net), [20.0, 80.0]);
        // A flow ends within the step when its bytes are through.
        let mut done = Vec::new();
        net.start(&[narrow], 5.0, 0.0, Carries::Ingest { task: 2 });
        net.step(1.0, &mut Vec::new(), &mut done, |_, _| {});
        assert!(matches!(done[..], [Carries::Ingest { task: 2 }]), "{done:?}");
        assert_eq!(net.active(), 2);
    }

    #[test]
    fn a_senders_last_bytes_in_buffers_leave_its_link_to_the_next_flow() {
        let (mut net, [sender, receiver]) = network([10.0, 5.0]);
        // 20 bytes, the last 10 buffered: the receiver's 5 a second hold the flow; the sender
        // is through after 2 s, the receiver after 4 s.
        net.start(&[sender, receiver], 20.0, 10.0, Carries::Ingest { task: 0 });
        let (mut released, mut done) = (Vec::new(), Vec::new());
        let mut at = Vec::new();
        for second in 1..=4 {
            net.step(1.0, &mut released, &mut done, |_, _| {});
            at.push((second, released.len(), done.len()));
        }
        assert_eq!(at, [(1, 0, 0), (2, 1, 0), (3, 1, 0), (4, 1, 1)]);
        // Released, the flow no longer counts on the sender's link: a new flow there gets all
        // of it.
        net.start(&[sender, receiver], 10.0, 0.0, Carries::Ingest { task: 1 });
        net.start(&[sender], 10.0, 0.0, Carries::Ingest { task: 2 });
        assert_eq!(moved_per_task(&mut net), [0.0, 5.0, 5.0]);
    }
}
