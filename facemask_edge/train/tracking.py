"""Optional energy (CodeCarbon, offline) and experiment tracking (Weights & Biases), as in the study.

Both are optional extras (``pip install facemask-edge[tracking]``). Absent packages are noted once
in ``metrics.json``; they never stop a training run.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

__all__ = ["EnergyMeter", "WandbRun"]


class EnergyMeter:
    """Measures energy (kWh) and emissions (kg CO2eq) per stage with CodeCarbon's offline tracker."""

    def __init__(self, out_dir: Path, country: str = "USA"):
        self.out_dir = Path(out_dir)
        self.country = country
        self.stages: dict[str, dict] = {}
        try:
            import codecarbon  # noqa: F401

            self.available = True
        except ImportError:
            self.available = False

    @contextlib.contextmanager
    def stage(self, name: str):
        if not self.available:
            yield
            return
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(country_iso_code=self.country, project_name=name,
                                          output_dir=str(self.out_dir), log_level="error",
                                          save_to_file=True)
        tracker.start()
        try:
            yield
        finally:
            kg = tracker.stop()
            data = tracker.final_emissions_data
            self.stages[name] = {"energy_kwh": float(getattr(data, "energy_consumed", 0.0) or 0.0),
                                 "emissions_kg_co2": float(kg or 0.0)}

    def report(self) -> dict:
        if not self.available:
            return {"available": False, "note": "pip install codecarbon to measure energy"}
        total_kwh = sum(s["energy_kwh"] for s in self.stages.values())
        total_kg = sum(s["emissions_kg_co2"] for s in self.stages.values())
        return {"available": True, "mode": "offline", "country": self.country,
                "stages": self.stages, "energy_kwh": total_kwh, "emissions_kg_co2": total_kg}


class WandbRun:
    """A Weights & Biases run (offline mode works without an account), or nothing."""

    def __init__(self, enabled: bool, out_dir: Path, config: dict, mode: str = "offline"):
        self.run = None
        if not enabled:
            return
        try:
            import wandb
        except ImportError:
            from facemask_edge.errors import FacemaskError

            raise FacemaskError("--wandb needs the wandb package",
                                "pip install 'facemask-edge[tracking]' or drop --wandb") from None
        self._wandb = wandb
        self.run = wandb.init(project="facemask-edge", dir=str(out_dir), config=config, mode=mode,
                              name=Path(out_dir).name, reinit=True)

    def log(self, data: dict) -> None:
        if self.run:
            self.run.log(data)

    def log_split(self, split_path: Path) -> None:
        if self.run:
            art = self._wandb.Artifact("data-split", type="dataset")
            art.add_file(str(split_path))
            self.run.log_artifact(art)

    def finish(self, summary: dict) -> None:
        if self.run:
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish()
