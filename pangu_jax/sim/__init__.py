"""An operator-level performance model of Pangu training: predict step time, memory and MFU of a
(model config, parallel plan, hardware) triple before paying for a run. See docs/simulator.md."""
