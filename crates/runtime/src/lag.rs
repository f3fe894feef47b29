//! TEMPORARY compile shim, replaced by the real lag probe on merge.
#[derive(Debug)]
pub struct LagProbe;
#[derive(Debug, Clone, serde::Serialize)]
pub struct LagSnapshot;
impl LagProbe {
    pub fn spawn(_i: std::time::Duration) -> Self {
        LagProbe
    }
    pub fn snapshot(&self) -> LagSnapshot {
        LagSnapshot
    }
    pub fn stop(self) {}
}
