//! Which writer lane writes each partition held: the same one for as long as it is held, so
//! that its flushes land in order; lanes do not wait for each other.

use std::collections::HashMap;

/// Lanes of the partitions held, chosen at first use as the lane with the fewest.
#[derive(Debug)]
pub struct PartitionLanes {
    lane_of: HashMap<i32, usize>,
    /// Partitions per lane.
    held: Vec<usize>,
}

impl PartitionLanes {
    pub fn new(lanes: usize) -> PartitionLanes {
        PartitionLanes { lane_of: HashMap::new(), held: vec![0; lanes.max(1)] }
    }

    /// The lane of `partition`, chosen now if it has none.
    pub fn lane(&mut self, partition: i32) -> usize {
        let held = &mut self.held;
        *self.lane_of.entry(partition).or_insert_with(|| {
            let lane = (0..held.len()).min_by_key(|&lane| held[lane]).unwrap_or(0);
            held[lane] += 1;
            lane
        })
    }

    /// Frees the lane of a partition no job holds any more.
    pub fn forget(&mut self, partition: i32) {
        if let Some(lane) = self.lane_of.remove(&partition) {
            self.held[lane] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PartitionLanes;

    #[test]
    fn partitions_keep_their_lane_and_spread_over_the_lanes() {
        let mut lanes = PartitionLanes::new(2);
        let first: Vec<usize> = [0, 1, 2, 3].into_iter().map(|p| lanes.lane(p)).collect();
        assert_eq!(first, [0, 1, 0, 1]);
        assert_eq!([3, 2, 1, 0].map(|p| lanes.lane(p)), [1, 0, 1, 0], "a held partition keeps its lane");
        // Partitions 0 and 2 move away: the next ones go to the lane they freed.
        lanes.forget(0);
        lanes.forget(2);
        lanes.forget(2);
        assert_eq!([7, 5].map(|p| lanes.lane(p)), [0, 0]);
        assert_eq!(lanes.lane(9), 0, "ties go to the first lane");
        assert_eq!(lanes.lane(11), 1);
    }

    #[test]
    fn no_lanes_configured_means_one() {
        let mut lanes = PartitionLanes::new(0);
        assert_eq!([4, 5].map(|p| lanes.lane(p)), [0, 0]);
    }
}
