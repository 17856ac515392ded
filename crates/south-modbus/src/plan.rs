//! The request planner: which reads to send each poll.
//!
//! Tags are sorted by space and address, then joined greedily: a tag joins the current request
//! when it is in the same space, starts no more than `max_gap` unconfigured items after the
//! request's end, and the joined request stays within the protocol limit (125 registers or 2000
//! bits). For intervals sorted by start, this greedy sweep gives the fewest requests: any plan
//! must start a new request at least wherever the sweep does. Gaps default to 0 because some
//! devices answer an exception for addresses that hold nothing.

use airlock_config::{ModbusTag, Space};

/// How far the planner may go to join tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_gap_registers: u16,
    pub max_gap_bits: u16,
    /// `false` sends one request per tag (the baseline the benchmark compares against).
    pub coalesce: bool,
}

/// One read request and the tags its answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub space: Space,
    pub start: u16,
    pub count: u16,
    pub tags: Vec<PlannedTag>,
}

/// A tag inside a request: its index in the device's tag list and where its data starts in the
/// answer (in registers or bits). A tag longer than one request allows (a waveform) is read in
/// `parts` requests; this is part `part` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTag {
    pub index: usize,
    pub offset: u16,
    pub part: u16,
    pub parts: u16,
}

impl ReadRequest {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Plans the reads that fetch every tag once.
pub fn plan(tags: &[ModbusTag], limits: PlanLimits) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].space, tags[i].address, tags[i].width()));
    let mut requests: Vec<ReadRequest> = Vec::new();
    for i in order {
        let tag = &tags[i];
        let max = tag.space.max_per_request();
        if tag.width() > max {
            // Too long for one request: its own requests, in parts, read back to back.
            let parts = tag.width().div_ceil(max);
            for part in 0..parts {
                let start = tag.address + part * max;
                let count = max.min(tag.width() - part * max);
                requests.push(ReadRequest {
                    space: tag.space,
                    start,
                    count,
                    tags: vec![PlannedTag { index: i, offset: 0, part, parts }],
                });
            }
            continue;
        }
        let joined = match requests.last_mut() {
            Some(req) if limits.coalesce && can_join(req, tag, limits) => {
                let end = req.end().max(u32::from(tag.address) + u32::from(tag.width()));
                req.count = (end - u32::from(req.start)) as u16;
                req.tags.push(PlannedTag { index: i, offset: tag.address - req.start, part: 0, parts: 1 });
                true
            }
            _ => false,
        };
        if !joined {
            requests.push(ReadRequest {
                space: tag.space,
                start: tag.address,
                count: tag.width(),
                tags: vec![PlannedTag { index: i, offset: 0, part: 0, parts: 1 }],
            });
        }
    }
    requests
}

fn can_join(req: &ReadRequest, tag: &ModbusTag, limits: PlanLimits) -> bool {
    let gap = if tag.space.is_bit() { limits.max_gap_bits } else { limits.max_gap_registers };
    let tag_end = u32::from(tag.address) + u32::from(tag.width());
    req.space == tag.space
        && u32::from(tag.address) <= req.end() + u32::from(gap)
        && tag_end.max(req.end()) - u32::from(req.start) <= u32::from(tag.space.max_per_request())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_config::{DataType, WordOrder};
    use airlock_model::AssetPath;

    fn tag(space: Space, address: u16, data_type: DataType) -> ModbusTag {
        ModbusTag {
            name: format!("t{address}"),
            path: AssetPath::parse("a/d").unwrap(),
            space,
            address,
            data_type,
            order: WordOrder::Abcd,
            bit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// Plans `tags` and compares the requests as `(space, start, count, [tag indices])`.
    fn check(tags: &[ModbusTag], gap: u16, expected: &[(Space, u16, u16, &[usize])]) {
        let limits = PlanLimits { max_gap_registers: gap, max_gap_bits: gap, coalesce: true };
        let got: Vec<(Space, u16, u16, Vec<usize>)> = plan(tags, limits)
            .into_iter()
            .map(|r| (r.space, r.start, r.count, r.tags.iter().map(|t| t.index).collect()))
            .collect();
        let expected: Vec<(Space, u16, u16, Vec<usize>)> =
            expected.iter().map(|(s, a, c, t)| (*s, *a, *c, t.to_vec())).collect();
        assert_eq!(got, expected);
    }

    use DataType::*;
    use Space::*;

    #[test]
    fn a_waveform_wider_than_a_request_is_read_in_parts() {
        let wave = DataType::Waveform { samples: 300, rate_hz: 4096 };
        let tags = [tag(HoldingRegister, 0, U16), tag(HoldingRegister, 1, wave), tag(HoldingRegister, 301, U16)];
        check(
            &tags,
            0,
            &[
                (HoldingRegister, 0, 1, &[0]),
                (HoldingRegister, 1, 125, &[1]),
                (HoldingRegister, 126, 125, &[1]),
                // The last part is a request like any other: the next tag may join it.
                (HoldingRegister, 251, 51, &[1, 2]),
            ],
        );
        let limits = PlanLimits { max_gap_registers: 0, max_gap_bits: 0, coalesce: true };
        let parts: Vec<(u16, u16)> =
            plan(&tags, limits)[1..4].iter().map(|r| (r.tags[0].part, r.tags[0].parts)).collect();
        assert_eq!(parts, [(0, 3), (1, 3), (2, 3)]);
    }

    #[test]
    fn adjacent_tags_join() {
        let tags = [tag(HoldingRegister, 0, U32), tag(HoldingRegister, 2, U16), tag(HoldingRegister, 3, F64)];
        check(&tags, 0, &[(HoldingRegister, 0, 7, &[0, 1, 2])]);
    }

    #[test]
    fn gaps_join_only_within_max_gap() {
        let tags = [tag(InputRegister, 0, U16), tag(InputRegister, 5, U16), tag(InputRegister, 20, U16)];
        check(&tags, 4, &[(InputRegister, 0, 6, &[0, 1]), (InputRegister, 20, 1, &[2])]);
        check(&tags, 3, &[(InputRegister, 0, 1, &[0]), (InputRegister, 5, 1, &[1]), (InputRegister, 20, 1, &[2])]);
        check(&tags, 14, &[(InputRegister, 0, 21, &[0, 1, 2])]);
    }

    #[test]
    fn spaces_never_mix_and_sort_by_address() {
        let tags = [
            tag(HoldingRegister, 1, U16),
            tag(InputRegister, 0, U16),
            tag(HoldingRegister, 0, U16),
            tag(Coil, 0, Bool),
        ];
        check(&tags, 10, &[(Coil, 0, 1, &[3]), (InputRegister, 0, 1, &[1]), (HoldingRegister, 0, 2, &[2, 0])]);
    }

    #[test]
    fn register_requests_stop_at_125() {
        let tags: Vec<ModbusTag> = (0..70).map(|i| tag(HoldingRegister, i * 2, U32)).collect();
        let plans = plan(&tags, PlanLimits { max_gap_registers: 0, max_gap_bits: 0, coalesce: true });
        let counts: Vec<u16> = plans.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![124, 16]);
        // A tag that would straddle the limit starts a new request rather than being split.
        let tags = [tag(HoldingRegister, 0, String { length_chars: 248 }), tag(HoldingRegister, 124, U32)];
        check(&tags, 0, &[(HoldingRegister, 0, 124, &[0]), (HoldingRegister, 124, 2, &[1])]);
        let tags = [
            tag(HoldingRegister, 0, String { length_chars: 246 }),
            tag(HoldingRegister, 123, U16),
            tag(HoldingRegister, 124, U16),
        ];
        check(&tags, 0, &[(HoldingRegister, 0, 125, &[0, 1, 2])]);
    }

    #[test]
    fn bit_requests_stop_at_2000() {
        let tags: Vec<ModbusTag> = (0..2001).map(|i| tag(DiscreteInput, i, Bool)).collect();
        let plans = plan(&tags, PlanLimits { max_gap_registers: 0, max_gap_bits: 0, coalesce: true });
        let counts: Vec<u16> = plans.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![2000, 1]);
        assert_eq!(plans[1].start, 2000);
    }

    #[test]
    fn bits_of_one_register_share_it() {
        let mut a = tag(HoldingRegister, 10, Bool);
        a.bit = Some(0);
        let mut b = tag(HoldingRegister, 10, Bool);
        b.bit = Some(7);
        let c = tag(HoldingRegister, 10, U16);
        check(&[a, b, c], 0, &[(HoldingRegister, 10, 1, &[0, 1, 2])]);
    }

    #[test]
    fn without_coalescing_every_tag_is_a_request() {
        let tags = [tag(HoldingRegister, 0, U32), tag(HoldingRegister, 2, U16)];
        let plans = plan(&tags, PlanLimits { max_gap_registers: 10, max_gap_bits: 10, coalesce: false });
        assert_eq!(plans.len(), 2);
        assert!(plan(&[], PlanLimits { max_gap_registers: 0, max_gap_bits: 0, coalesce: true }).is_empty());
    }

    #[test]
    fn the_last_address_is_reachable() {
        let tags = [tag(HoldingRegister, 65_534, U16), tag(HoldingRegister, 65_535, U16)];
        check(&tags, 0, &[(HoldingRegister, 65_534, 2, &[0, 1])]);
    }
}
