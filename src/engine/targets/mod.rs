//! Appliers of a plan, one per target kind. `mail_contact` writes Exchange mail contacts (issue 4);
//! personal contacts (issue 5) will sit beside it and reuse the plan, records and safety logic.

pub mod mail_contact;
