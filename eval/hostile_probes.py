"""Run issue 20's hostile probes: bad audio, configs, weights, op inputs, training kills, exports; count the outcomes.

    python eval/hostile_probes.py [--areas op config] [--names nan] [--timeout 60] [--output_dir eval/results/hostile]

Each probe is classified as clear_error, handled, raw_torch_error, silent_wrong or hang. Writes ``probes.json``
and ``REPORT.md`` (counts per area and outcome, every non-passing probe, the unsafe-load scan). The library is
``modeling_lact_audio.hostile_probes``.
"""

from modeling_lact_audio.hostile_probes import main

if __name__ == "__main__":
    main()
