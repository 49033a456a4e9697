//! m365-sim
