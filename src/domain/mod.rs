//! The domain: validated events from the hooks API and the other seed systems, and the
//! participant timeline they fold into. No I/O.

pub mod append;
pub mod idempotency;
pub mod ingest;
pub mod sources;
pub mod stats;
pub mod timeline;
pub mod timestamp;
pub mod types;
pub mod vocabulary;

pub use append::{
    AppendPlan, HopChange, ParticipantRow, PresentStint, StintRow, Stored, StoredParticipant,
    Summary, needs_interaction, plan_append, present_needed,
};
pub use ingest::{Action, BodyError, ConversationId, Event, FieldError, IngestBatch};
pub use timeline::Timeline;
pub use types::{EventName, Experience, Participant, TransferType, Transition};
pub use vocabulary::{
    Anomaly, ExitType, Hop, HopKind, HopOutcome, ParticipantTimeline, Status, Stint, Transfers,
};
