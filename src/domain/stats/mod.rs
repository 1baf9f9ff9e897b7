//! Operations metrics (SPEC 11): the facts a conversation's events make, how they add up
//! per 15-minute slot, and how slots, edge facts and `handled` marks add up per bucket and
//! group of a query. No I/O: the stats worker stores what [`Rollup`] gives, and a query
//! feeds what it reads to an [`Accumulator`].

pub mod buckets;
pub mod facts;
pub mod sketch;
pub mod tally;

pub use buckets::{Bucket, BucketError, Granularity, MAX_BUCKETS, buckets, local_rfc3339};
pub use facts::{CONVERSATION_GROUPINGS, ConversationDims, ConversationStats, Dims, Fact, Measure};
pub use tally::{Durations, Tally};

use std::collections::BTreeMap;

/// Slots are 15 minutes of UTC, in microseconds: every bucket boundary of every supported
/// granularity and time zone falls on one (UTC offsets are whole quarter hours), so a
/// bucket is whole slots, but for a `from` or `to` between two.
pub const SLOT_MICROS: i64 = 15 * 60 * 1_000_000;

pub fn slot_of(micros: i64) -> i64 {
    micros.div_euclid(SLOT_MICROS)
}

/// How long the stored periods are: quarter hours, and whole hours (their sums), which
/// answer hourly and longer buckets with a quarter of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Quarter,
    Hour,
}

impl Level {
    pub const ALL: [Level; 2] = [Self::Quarter, Self::Hour];

    pub fn micros(self) -> i64 {
        match self {
            Self::Quarter => SLOT_MICROS,
            Self::Hour => 4 * SLOT_MICROS,
        }
    }

    /// The period holding `micros`.
    pub fn period_of(self, micros: i64) -> i64 {
        micros.div_euclid(self.micros())
    }

    /// How the level is told apart in storage: added to a cuboid's or grouping's id.
    pub fn id(self) -> i16 {
        match self {
            Self::Quarter => 0,
            Self::Hour => 10,
        }
    }

    /// The periods wholly inside `[from, to)`.
    fn whole(self, from: i64, to: i64) -> std::ops::Range<i64> {
        let first = (from + self.micros() - 1).div_euclid(self.micros());
        let last = to.div_euclid(self.micros());
        first..last.max(first)
    }
}

/// Where to read each part of a range: whole hours and quarters from storage, the rest fact
/// by fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub periods: Vec<(Level, std::ops::Range<i64>)>,
    /// `[start, end)` in microseconds.
    pub facts: Vec<(i64, i64)>,
}

impl Reading {
    /// `[from, to)` in hours where `hourly`, the quarters around them, and the facts of
    /// the quarters the ends cut.
    fn of(from: i64, to: i64, hourly: bool) -> Self {
        if from >= to {
            return Self::default();
        }
        let quarters = Level::Quarter.whole(from, to);
        if quarters.is_empty() {
            return Self {
                periods: Vec::new(),
                facts: vec![(from, to)],
            };
        }
        let (head, tail) = (quarters.start * SLOT_MICROS, quarters.end * SLOT_MICROS);
        let mut periods = Vec::new();
        let hours = if hourly {
            Level::Hour.whole(head, tail)
        } else {
            0..0
        };
        if hours.is_empty() {
            periods.push((Level::Quarter, quarters));
        } else {
            let (first, last) = (hours.start * 4, hours.end * 4);
            periods.push((Level::Quarter, quarters.start..first));
            periods.push((Level::Hour, hours));
            periods.push((Level::Quarter, last..quarters.end));
        }
        periods.retain(|(_, range)| !range.is_empty());
        let facts = [(from, head), (tail, to)]
            .into_iter()
            .filter(|(start, end)| start < end)
            .collect();
        Self { periods, facts }
    }
}

/// What a query may group or filter by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
pub enum Dimension {
    Participant,
    Queue,
    Experience,
    Language,
    Service,
}

spelled!(Dimension);

impl Dimension {
    /// A participant's or a queue's: conversation counts cannot be told apart by it.
    pub fn is_of_participants(self) -> bool {
        matches!(self, Self::Participant | Self::Queue)
    }

    fn of(self, dims: &Dims) -> &Option<String> {
        match self {
            Self::Participant => &dims.participant,
            Self::Queue => &dims.queue,
            Self::Experience => &dims.conversation.experience,
            Self::Language => &dims.conversation.language,
            Self::Service => &dims.conversation.service,
        }
    }

    /// Its bit in a grouping of the conversation's dimensions.
    fn conversation_bit(self) -> usize {
        match self {
            Self::Experience => 1,
            Self::Language => 2,
            Self::Service => 4,
            Self::Participant | Self::Queue => 0,
        }
    }
}

/// The groupings slots are kept in: everything together, by participant, by queue, by the
/// conversation's own dimensions, and by all five (which answers any other grouping or
/// filter, with more rows read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cuboid {
    Total = 0,
    Participant = 1,
    Queue = 2,
    Full = 3,
    Conversation = 4,
}

impl Cuboid {
    pub const ALL: [Cuboid; 5] = [
        Self::Total,
        Self::Participant,
        Self::Queue,
        Self::Full,
        Self::Conversation,
    ];

    pub fn id(self) -> i16 {
        self as i16
    }

    /// The smallest one that tells apart every dimension in `needed`.
    pub fn for_dimensions(needed: &[Dimension]) -> Self {
        match needed {
            [] => Self::Total,
            [Dimension::Participant] => Self::Participant,
            [Dimension::Queue] => Self::Queue,
            _ if !needed
                .iter()
                .any(|dimension| dimension.is_of_participants()) =>
            {
                Self::Conversation
            }
            _ => Self::Full,
        }
    }

    /// `dims` as this cuboid keeps them: `None` for what it does not tell apart.
    pub fn key(self, dims: &Dims) -> Dims {
        match self {
            Self::Total => Dims::default(),
            Self::Participant => Dims {
                participant: dims.participant.clone(),
                ..Dims::default()
            },
            Self::Queue => Dims {
                queue: dims.queue.clone(),
                ..Dims::default()
            },
            Self::Conversation => Dims {
                conversation: dims.conversation.clone(),
                ..Dims::default()
            },
            Self::Full => dims.clone(),
        }
    }

    /// Whether the cuboid counts `measure`: a conversation's own facts cannot go to a
    /// participant or a queue.
    fn counts(self, measure: &Measure) -> bool {
        let of_conversation = matches!(measure, Measure::Started | Measure::Ended);
        !(of_conversation && matches!(self, Self::Participant | Self::Queue))
    }
}

/// A `handled` mark: a stint closed in period `slot` of `level` under a grouping of the
/// conversation's dimensions (`mask`, with their values `key`), the conversation's previous
/// close under the same values in period `previous_slot` (or none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandledMark {
    pub level: Level,
    pub mask: usize,
    pub slot: i64,
    pub key: ConversationDims,
    pub previous_slot: Option<i64>,
}

/// The slot tallies and `handled` marks of a batch of facts, ready to be added to what is
/// stored.
#[derive(Debug, Default)]
pub struct Rollup {
    pub tallies: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
    pub handled: BTreeMap<HandledMark, u64>,
}

impl Rollup {
    pub fn add(&mut self, fact: &Fact) {
        let micros = facts::micros_at(fact.at);
        for level in Level::ALL {
            let period = level.period_of(micros);
            for cuboid in Cuboid::ALL {
                if cuboid.counts(&fact.measure) {
                    let key = (level, cuboid, period, cuboid.key(&fact.dims));
                    self.tallies.entry(key).or_default().add(fact);
                }
            }
            if let Measure::Stint { previous, .. } = &fact.measure {
                for (mask, previous) in previous.iter().enumerate() {
                    let mark = HandledMark {
                        level,
                        mask,
                        slot: period,
                        key: fact.dims.conversation.projected(mask),
                        previous_slot: previous.map(|at| level.period_of(at)),
                    };
                    *self.handled.entry(mark).or_default() += 1;
                }
            }
        }
    }
}

/// The filters of a query: the value a grouping by each would keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub participant: Option<String>,
    pub queue: Option<String>,
    pub experience: Option<String>,
}

impl Filters {
    fn dimensions(&self) -> Vec<Dimension> {
        [
            (Dimension::Participant, &self.participant),
            (Dimension::Queue, &self.queue),
            (Dimension::Experience, &self.experience),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_some())
        .map(|(dimension, _)| dimension)
        .collect()
    }

    fn keep(&self, dims: &Dims) -> bool {
        let matches =
            |wanted: &Option<String>, have: &Option<String>| wanted.is_none() || wanted == have;
        matches(&self.participant, &dims.participant)
            && matches(&self.queue, &dims.queue)
            && matches(&self.experience, &dims.conversation.experience)
    }
}

/// What a stats query asks, and how it is answered from storage.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub buckets: Vec<Bucket>,
    pub group_by: Vec<Dimension>,
    pub filters: Filters,
}

/// Whether a group's conversation counts (and `handled`) can be given, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationCounts {
    /// Grouped or filtered by participant or queue: not attributable.
    Unknown,
    /// Counted under this grouping of the conversation's dimensions.
    Grouped { mask: usize },
}

impl StatsQuery {
    /// Every dimension the query tells apart: its groups and its filters.
    pub fn dimensions(&self) -> Vec<Dimension> {
        let mut dimensions = self.group_by.clone();
        dimensions.extend(self.filters.dimensions());
        dimensions.sort();
        dimensions.dedup();
        dimensions
    }

    pub fn cuboid(&self) -> Cuboid {
        Cuboid::for_dimensions(&self.dimensions())
    }

    /// The one key of the cuboid the query can use, when a filter pins it: a participant's
    /// or a queue's own rows, rather than every participant's or queue's.
    pub fn only_key(&self) -> Option<Dims> {
        let cuboid = self.cuboid();
        let pinned = Dims {
            participant: self.filters.participant.clone(),
            queue: self.filters.queue.clone(),
            ..Dims::default()
        };
        match cuboid {
            Cuboid::Participant if pinned.participant.is_some() => Some(cuboid.key(&pinned)),
            Cuboid::Queue if pinned.queue.is_some() => Some(cuboid.key(&pinned)),
            _ => None,
        }
    }

    pub fn conversation_counts(&self) -> ConversationCounts {
        let dimensions = self.dimensions();
        if dimensions
            .iter()
            .any(|dimension| dimension.is_of_participants())
        {
            return ConversationCounts::Unknown;
        }
        let mask = dimensions
            .iter()
            .map(|dimension| dimension.conversation_bit())
            .sum();
        ConversationCounts::Grouped { mask }
    }

    /// `[from, to)` in microseconds.
    pub fn range(&self) -> (i64, i64) {
        let first = self.buckets.first().expect("a query has a bucket");
        let last = self.buckets.last().expect("a query has a bucket");
        (first.start.as_microsecond(), last.end.as_microsecond())
    }

    /// Whether every bucket boundary inside the range is on a whole hour, so that stored
    /// hours can answer (not so for quarter-hour buckets, or a zone half an hour off UTC).
    fn hourly(&self) -> bool {
        let (from, to) = self.range();
        self.buckets.iter().all(|bucket| {
            [bucket.start.as_microsecond(), bucket.end.as_microsecond()]
                .into_iter()
                .all(|at| at == from || at == to || at.rem_euclid(Level::Hour.micros()) == 0)
        })
    }

    /// Where the tallies of the range are read from.
    pub fn tally_reading(&self) -> Reading {
        let (from, to) = self.range();
        Reading::of(from, to, self.hourly())
    }

    /// Where `handled` is read from: as the tallies, except in a first bucket that starts
    /// between two slots, which is read fact by fact (a stored mark only knows its
    /// conversation's previous close to the period).
    pub fn handled_reading(&self) -> Reading {
        let (from, to) = self.range();
        let first = self.buckets.first().expect("a query has a bucket");
        if from.rem_euclid(SLOT_MICROS) == 0 {
            return Reading::of(from, to, self.hourly());
        }
        let first_end = first.end.as_microsecond();
        let mut reading = Reading::of(first_end, to, self.hourly());
        reading.facts.insert(0, (from, first_end));
        reading
    }

    fn bucket_at(&self, micros: i64) -> Option<usize> {
        let index = self
            .buckets
            .partition_point(|bucket| bucket.start.as_microsecond() <= micros);
        let index = index.checked_sub(1)?;
        (micros < self.buckets[index].end.as_microsecond()).then_some(index)
    }

    fn group_of(&self, dims: &Dims) -> Vec<Option<String>> {
        self.group_by
            .iter()
            .map(|dimension| dimension.of(dims).clone())
            .collect()
    }
}

/// One group's bucket: what its facts add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub tally: Tally,
    pub handled: u64,
}

/// A query's answer as it is put together: a cell per group and bucket.
#[derive(Debug)]
pub struct Accumulator<'q> {
    query: &'q StatsQuery,
    pub cells: BTreeMap<(Vec<Option<String>>, usize), Cell>,
}

impl<'q> Accumulator<'q> {
    pub fn new(query: &'q StatsQuery) -> Self {
        Self {
            query,
            cells: BTreeMap::new(),
        }
    }

    /// A stored period's tally under `dims` (as the query's cuboid keeps them).
    pub fn add_period(&mut self, level: Level, period: i64, dims: &Dims, tally: &Tally) {
        if !self.query.filters.keep(dims) {
            return;
        }
        let Some(bucket) = self.query.bucket_at(period * level.micros()) else {
            return;
        };
        let group = self.query.group_of(dims);
        self.cells
            .entry((group, bucket))
            .or_default()
            .tally
            .merge(tally);
    }

    /// A fact at the edge of the range, not in a whole slot.
    pub fn add_fact(&mut self, fact: &Fact) {
        if !self.query.cuboid().counts(&fact.measure) || !self.query.filters.keep(&fact.dims) {
            return;
        }
        let Some(bucket) = self.query.bucket_at(facts::micros_at(fact.at)) else {
            return;
        };
        let group = self.query.group_of(&fact.dims);
        self.cells
            .entry((group, bucket))
            .or_default()
            .tally
            .add(fact);
    }

    /// Stored `handled` marks of a period whose bucket starts on a boundary of its level.
    pub fn add_handled_mark(&mut self, mark: &HandledMark, count: u64) {
        let level = mark.level;
        let Some(bucket) = self.query.bucket_at(mark.slot * level.micros()) else {
            return;
        };
        let start = self.query.buckets[bucket].start.as_microsecond();
        if mark
            .previous_slot
            .is_some_and(|previous| previous >= level.period_of(start))
        {
            return;
        }
        let dims = Dims {
            conversation: mark.key.clone(),
            ..Dims::default()
        };
        if !self.query.filters.keep(&dims) {
            return;
        }
        let group = self.query.group_of(&dims);
        self.cells.entry((group, bucket)).or_default().handled += count;
    }

    /// A stint's close read as a fact, counted as `handled` under grouping `mask` if it is
    /// its conversation's first in the bucket.
    pub fn add_handled_fact(&mut self, fact: &Fact, mask: usize) {
        let Measure::Stint { previous, .. } = &fact.measure else {
            return;
        };
        let Some(bucket) = self.query.bucket_at(facts::micros_at(fact.at)) else {
            return;
        };
        let start = self.query.buckets[bucket].start.as_microsecond();
        if previous[mask].is_some_and(|previous| previous >= start) {
            return;
        }
        if !self.query.filters.keep(&fact.dims) {
            return;
        }
        let group = self.query.group_of(&fact.dims);
        self.cells.entry((group, bucket)).or_default().handled += 1;
    }
}
