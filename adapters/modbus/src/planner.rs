//! The request planner: turns a device's points into as few read requests
//! as the protocol allows, and learns from "illegal data address" answers.
//!
//! Points of one area are merged while the request stays within the
//! protocol limit (125 registers, 2000 bits, or the device's lower limit)
//! and the holes between them are at most `max_gap` items. Devices often
//! refuse a read that touches an address they do not implement; when a
//! merged request is refused that way, [`Planner::split`] puts a barrier
//! between its points (remembered for every later plan) and returns the
//! smaller requests to try at once, so one bad address costs only itself.

use std::collections::BTreeSet;

use crate::pdu::Request;
use crate::point::{Area, Point};

/// How far merging may go for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Unmapped items a request may read to join two points.
    pub max_gap: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: 125,
            max_bits: 2000,
            max_gap: 8,
        }
    }
}

impl Limits {
    pub fn max_for(&self, area: Area) -> u16 {
        if area.is_bits() {
            self.max_bits.min(area.max_read())
        } else {
            self.max_registers.min(area.max_read())
        }
    }
}

/// One planned read: an address range and the points (indices into the
/// device's point list) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub area: Area,
    pub start: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

impl ReadRequest {
    pub fn pdu(&self) -> Request {
        Request::Read {
            area: self.area,
            start: self.start,
            count: self.count,
        }
    }
}

/// Plans a device's reads; remembers where requests must not be merged.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    limits: Limits,
    /// `(area, address)`: no request may hold both a point below `address`
    /// and one at or above it.
    barriers: BTreeSet<(Area, u16)>,
}

impl Planner {
    pub fn new(limits: Limits) -> Self {
        Planner {
            limits,
            barriers: BTreeSet::new(),
        }
    }

    /// Requests covering `selected` (indices into `points`), ordered by
    /// area and address.
    pub fn plan(&self, points: &[Point], selected: &[usize]) -> Vec<ReadRequest> {
        let mut order: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|i| *i < points.len())
            .collect();
        order.sort_by_key(|i| (points[*i].area, points[*i].address, points[*i].end()));
        let mut requests: Vec<ReadRequest> = Vec::new();
        // End (exclusive) of the request being built and its first point's address.
        let mut current: Option<(u32, u16)> = None;
        for i in order {
            let p = &points[i];
            if let (Some((end, first)), Some(last)) = (current, requests.last_mut())
                && last.area == p.area
                && self.may_join(last, end, first, p)
            {
                let new_end = end.max(p.end());
                last.count = (new_end - u32::from(last.start)) as u16;
                last.points.push(i);
                current = Some((new_end, first));
                continue;
            }
            requests.push(ReadRequest {
                area: p.area,
                start: p.address,
                count: p.ty.width(),
                points: vec![i],
            });
            current = Some((p.end(), p.address));
        }
        requests
    }

    fn may_join(&self, request: &ReadRequest, end: u32, first: u16, p: &Point) -> bool {
        let new_end = end.max(p.end());
        let within_limit =
            new_end - u32::from(request.start) <= u32::from(self.limits.max_for(p.area));
        let gap = u32::from(p.address).saturating_sub(end);
        let no_barrier = p.address <= first
            || self
                .barriers
                .range((p.area, first + 1)..=(p.area, p.address))
                .next()
                .is_none();
        within_limit && gap <= u32::from(self.limits.max_gap) && no_barrier
    }

    /// `request` was refused with "illegal data address": remember a
    /// barrier in its middle and return the smaller requests that replace
    /// it. `None` when it cannot be split (all its points share one
    /// address): then the error belongs to those points.
    pub fn split(&mut self, points: &[Point], request: &ReadRequest) -> Option<Vec<ReadRequest>> {
        let mut addresses: Vec<u16> = request
            .points
            .iter()
            .filter_map(|i| points.get(*i))
            .map(|p| p.address)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        if addresses.len() < 2 {
            return None;
        }
        let barrier = addresses[addresses.len() / 2];
        self.barriers.insert((request.area, barrier));
        Some(self.plan(points, &request.points))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::{Order, PointType};

    fn point(area: Area, address: u16, ty: PointType) -> Point {
        Point {
            name: format!("{area:?}{address}").into(),
            area,
            address,
            ty,
            order: Order::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            description: None,
            writable: false,
            min: None,
            max: None,
            poll: None,
            report: Default::default(),
        }
    }

    fn all(points: &[Point]) -> Vec<usize> {
        (0..points.len()).collect()
    }

    fn ranges(requests: &[ReadRequest]) -> Vec<(Area, u16, u16)> {
        requests
            .iter()
            .map(|r| (r.area, r.start, r.count))
            .collect()
    }

    #[test]
    fn adjacent_points_merge_per_area() {
        let points = vec![
            point(Area::Holding, 2, PointType::F32),
            point(Area::Holding, 0, PointType::U32),
            point(Area::Input, 0, PointType::U16),
            point(Area::Coil, 5, PointType::Bool),
            point(Area::Coil, 6, PointType::Bool),
        ];
        let planner = Planner::new(Limits::default());
        let plan = planner.plan(&points, &all(&points));
        assert_eq!(
            ranges(&plan),
            vec![
                (Area::Coil, 5, 2),
                (Area::Input, 0, 1),
                (Area::Holding, 0, 4)
            ]
        );
        assert_eq!(plan[2].points, vec![1, 0]);
    }

    #[test]
    fn gaps_are_bridged_up_to_the_limit() {
        let points = vec![
            point(Area::Holding, 0, PointType::U16),
            point(Area::Holding, 5, PointType::U16),
            point(Area::Holding, 20, PointType::U16),
        ];
        let planner = Planner::new(Limits {
            max_gap: 4,
            ..Limits::default()
        });
        let plan = planner.plan(&points, &all(&points));
        assert_eq!(
            ranges(&plan),
            vec![(Area::Holding, 0, 6), (Area::Holding, 20, 1)]
        );
        let strict = Planner::new(Limits {
            max_gap: 0,
            ..Limits::default()
        });
        assert_eq!(strict.plan(&points, &all(&points)).len(), 3);
    }

    #[test]
    fn requests_respect_the_size_limit() {
        let points: Vec<Point> = (0..130)
            .map(|a| point(Area::Holding, a, PointType::U16))
            .collect();
        let plan = Planner::new(Limits::default()).plan(&points, &all(&points));
        assert_eq!(
            ranges(&plan),
            vec![(Area::Holding, 0, 125), (Area::Holding, 125, 5)]
        );
        let small = Planner::new(Limits {
            max_registers: 10,
            ..Limits::default()
        });
        assert_eq!(small.plan(&points, &all(&points)).len(), 13);
        let coils: Vec<Point> = (0..2001)
            .map(|a| point(Area::Coil, a, PointType::Bool))
            .collect();
        let plan = Planner::new(Limits::default()).plan(&coils, &all(&coils));
        assert_eq!(
            ranges(&plan),
            vec![(Area::Coil, 0, 2000), (Area::Coil, 2000, 1)]
        );
    }

    #[test]
    fn bits_of_one_register_share_it() {
        let points = vec![
            point(Area::Holding, 3, PointType::Bit(0)),
            point(Area::Holding, 3, PointType::Bit(7)),
            point(Area::Holding, 4, PointType::U16),
        ];
        let plan = Planner::new(Limits::default()).plan(&points, &all(&points));
        assert_eq!(ranges(&plan), vec![(Area::Holding, 3, 2)]);
    }

    #[test]
    fn split_after_illegal_address_is_remembered() {
        let points: Vec<Point> = [0u16, 1, 2, 3, 10, 11]
            .iter()
            .map(|a| point(Area::Holding, *a, PointType::U16))
            .collect();
        let mut planner = Planner::new(Limits::default());
        let plan = planner.plan(&points, &all(&points));
        assert_eq!(ranges(&plan), vec![(Area::Holding, 0, 12)]);
        let halves = planner.split(&points, &plan[0]).unwrap();
        assert_eq!(
            ranges(&halves),
            vec![(Area::Holding, 0, 3), (Area::Holding, 3, 9)]
        );
        // The second half fails again: it splits further.
        let quarters = planner.split(&points, &halves[1]).unwrap();
        assert_eq!(
            ranges(&quarters),
            vec![(Area::Holding, 3, 1), (Area::Holding, 10, 2)]
        );
        // A fresh plan keeps what was learned.
        let replanned = planner.plan(&points, &all(&points));
        assert_eq!(
            ranges(&replanned),
            vec![
                (Area::Holding, 0, 3),
                (Area::Holding, 3, 1),
                (Area::Holding, 10, 2)
            ]
        );
        // A single address cannot be split: the error is the point's own.
        let single = ReadRequest {
            area: Area::Holding,
            start: 3,
            count: 1,
            points: vec![3],
        };
        assert_eq!(planner.split(&points, &single), None);
    }

    #[test]
    fn a_subset_is_planned_alone() {
        let points = vec![
            point(Area::Holding, 0, PointType::U16),
            point(Area::Holding, 1, PointType::U16),
            point(Area::Holding, 2, PointType::U16),
        ];
        let plan = Planner::new(Limits::default()).plan(&points, &[2]);
        assert_eq!(ranges(&plan), vec![(Area::Holding, 2, 1)]);
        assert_eq!(plan[0].points, vec![2]);
    }
}
