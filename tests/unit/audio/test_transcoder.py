"""The streaming transcoders: literal payloads for framing and state, real speech for quality.

Quality is measured against soxr's one-shot very-high-quality resample of the same signal, in the
telephone band, after shifting ours back by its declared delay (see ``audio_metrics``). No event
loop.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
import soxr
from audio_metrics import as_float, band_snr_db, fixture_names, load_fixture, measured_delay
from numpy.typing import NDArray

from agent.audio.codec import ULAW_SILENCE, pcm16_to_ulaw, resample_offline, ulaw_to_pcm16
from agent.audio.transcoder import (
    DOWNSAMPLER_FILTER,
    UPSAMPLER_FILTER,
    Downsampler24kTo8k,
    InboundTranscoder,
    OutboundTranscoder,
    Upsampler8kTo16k,
)
from agent.errors import AudioError

CALLER_FIXTURES = fixture_names("caller-")
MODEL_FIXTURES = fixture_names("model-")
FRAME = OutboundTranscoder.FRAME_BYTES
MIN_SNR_DB = 60.0
MAX_DELAY_MS = 5.0


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def white_noise(rate: int, seconds: float, rms: float = 3000.0) -> bytes:
    """A burst of full-band noise: as much energy above 4 kHz as below (worst case for aliasing).

    It fades in and out over 20 ms between 20 ms of silence, as speech does: an abrupt start would
    make the whole-signal FFT band-limit of the two outputs leak their (legitimately different)
    3.4-4 kHz content into the measured band and measure the edges instead of the filter.
    """
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, rms, int(rate * seconds))
    fade = np.hanning(2 * rate // 50)
    noise[: fade.size // 2] *= fade[: fade.size // 2]
    noise[-(fade.size // 2) :] *= fade[fade.size // 2 :]
    silence = np.zeros(rate // 50)
    burst = np.clip(np.round(np.concatenate((silence, noise, silence))), -32768, 32767)
    return burst.astype("<i2").tobytes()


def reference(pcm16: bytes, from_rate: int, to_rate: int) -> NDArray[np.float64]:
    """soxr VHQ one-shot in float64, saturated like any int16 output must be (no rounding noise)."""
    resampled = soxr.resample(as_float(pcm16), from_rate, to_rate, quality="VHQ")
    return np.clip(np.asarray(resampled, dtype=np.float64), -32768.0, 32767.0)


def outbound_all(transcoder: OutboundTranscoder, chunks: list[bytes]) -> bytes:
    out = b"".join(b"".join(transcoder.process(chunk)) for chunk in chunks)
    return out + b"".join(transcoder.flush())


def random_chunks(data: bytes, seed: int, largest: int, step: int = 1) -> list[bytes]:
    """Cut ``data`` into random pieces, multiples of ``step`` bytes (empty and tiny ones too)."""
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(data):
        size = step * rng.choice((0, 1, rng.randrange(largest // step)))
        chunks.append(data[start : start + size])
        start += size
    return chunks


def frequency_response(taps: NDArray[np.float64], rate: int) -> tuple[NDArray[np.float64], ...]:
    freqs = np.linspace(0.0, rate / 2, 4001)
    phasors = np.exp(-2j * np.pi * np.outer(freqs / rate, np.arange(taps.size)))
    return freqs, np.abs(phasors @ taps)


# --- filter design --------------------------------------------------------------------------------


def test_both_directions_declare_at_most_5_ms_of_delay() -> None:
    assert InboundTranscoder.delay_ms == Upsampler8kTo16k.delay_ms == 39 / 16
    assert OutboundTranscoder.delay_ms == Downsampler24kTo8k.delay_ms == 2.5
    assert InboundTranscoder().delay_ms <= MAX_DELAY_MS
    assert OutboundTranscoder().delay_ms <= MAX_DELAY_MS


@pytest.mark.parametrize("taps", [UPSAMPLER_FILTER, DOWNSAMPLER_FILTER])
def test_filters_are_symmetric_so_every_frequency_is_delayed_alike(
    taps: NDArray[np.float64],
) -> None:
    assert taps.size % 2 == 1
    assert np.array_equal(taps, taps[::-1])


def test_group_delays_are_whole_output_samples() -> None:
    """Odd lengths; the decimator's centre also falls on an 8 kHz sample (3 | delay at 24 kHz)."""
    assert (UPSAMPLER_FILTER.size - 1) // 2 == Upsampler8kTo16k.delay_samples == 39
    assert (DOWNSAMPLER_FILTER.size - 1) // 2 == 3 * Downsampler24kTo8k.delay_samples == 60


def test_upsampler_is_flat_in_the_telephone_band_and_rejects_images() -> None:
    freqs, gain = frequency_response(UPSAMPLER_FILTER / 2, 16000)
    assert np.max(np.abs(gain[freqs <= 3400] - 1.0)) < 1e-4
    assert 20 * np.log10(np.max(gain[freqs >= 4600])) < -85.0


def test_downsampler_is_flat_in_the_telephone_band_and_rejects_aliases() -> None:
    """Everything from 4.6 kHz up folds into 0-3.4 kHz at 8 kHz: it must be far below the signal."""
    freqs, gain = frequency_response(DOWNSAMPLER_FILTER, 24000)
    assert np.max(np.abs(gain[freqs <= 3400] - 1.0)) < 1e-4
    assert 20 * np.log10(np.max(gain[freqs >= 4600])) < -85.0


@pytest.mark.parametrize("freq", [4600, 5000, 6500, 7900, 8000, 9500, 11900])
def test_downsampler_attenuates_a_loud_out_of_band_tone_by_at_least_70_db(freq: int) -> None:
    t = np.arange(12000) / 24000
    tone = np.round(30000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    out = as_float(Downsampler24kTo8k().process(tone.tobytes()))[60:]  # past the start transient
    level_in = np.sqrt(np.mean(tone.astype(np.float64) ** 2))
    level_out = max(np.sqrt(np.mean(out**2)), 1e-3)
    assert 20 * np.log10(level_in / level_out) >= 70.0


# --- inbound: literal payloads --------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 7, 159, 160, 161, 400])
def test_inbound_emits_four_bytes_per_mu_law_byte_at_once(size: int) -> None:
    assert len(InboundTranscoder().process(b"\xff" * size)) == 4 * size


def test_inbound_turns_mu_law_silence_into_pcm_silence() -> None:
    assert InboundTranscoder().process(bytes([ULAW_SILENCE]) * 160) == b"\x00" * 640


def test_inbound_impulse_response_is_the_filter_delayed_by_nothing_more() -> None:
    """One loud mu-law byte then silence comes out as the filter's taps, scaled and rounded."""
    peak = 32124  # mu-law 0x80
    out = as_float(InboundTranscoder().process(b"\x80" + b"\xff" * 59))
    expected = np.zeros(120)
    expected[: UPSAMPLER_FILTER.size] = np.round(peak * UPSAMPLER_FILTER)
    assert np.max(np.abs(out - expected)) <= 1.0
    # Odd outputs are input samples passed through exactly: the centre tap is 1.
    assert out[Upsampler8kTo16k.delay_samples] == peak


def test_upsampler_rejects_half_a_sample() -> None:
    with pytest.raises(AudioError):
        Upsampler8kTo16k().process(b"\x00")


# --- outbound: literal payloads -------------------------------------------------------------------


def test_outbound_cuts_20_ms_of_model_audio_into_one_160_byte_frame() -> None:
    transcoder = OutboundTranscoder()
    assert transcoder.process(b"") == []
    assert transcoder.process(b"\x00\x00" * 480) == [bytes([ULAW_SILENCE]) * FRAME]
    # The turn's last 2.5 ms were still in the filter: flush drains them into a final frame.
    assert transcoder.flush() == [bytes([ULAW_SILENCE]) * FRAME]
    assert transcoder.flush() == []


def test_outbound_returns_only_whole_frames_and_carries_the_rest() -> None:
    transcoder = OutboundTranscoder()
    # Output sample m is due once input sample 3m has arrived: 477 samples make 159, not a frame.
    assert transcoder.process(b"\x00\x00" * 477) == []
    assert transcoder.process(b"\x00\x00") == [bytes([ULAW_SILENCE]) * FRAME]
    frames = transcoder.process(b"\x00\x00" * 480 * 5 + b"\x00\x00" * 3)
    assert frames == [bytes([ULAW_SILENCE]) * FRAME] * 5
    # The one extra sample and the drained filter tail, padded.
    assert transcoder.flush() == [bytes([ULAW_SILENCE]) * FRAME]


def test_outbound_carries_a_dangling_byte_to_the_next_chunk() -> None:
    """A sample split across two chunks is reassembled, not dropped or misaligned."""
    loud = pcm(*([20000] * 480))
    split = OutboundTranscoder()
    frames = split.process(loud[:5]) + split.process(loud[5:])
    assert frames == OutboundTranscoder().process(loud)
    assert len(frames) == 1


def test_flush_drains_the_filter_and_pads_the_partial_frame_with_mu_law_silence() -> None:
    transcoder = OutboundTranscoder()
    assert transcoder.process(pcm(*([1000] * 150))) == []  # 50 samples at 8 kHz
    (tail,) = transcoder.flush()
    assert len(tail) == FRAME
    # 50 samples of the turn plus the 20 (2.5 ms) the filter still held, then silence.
    assert tail[70:] == bytes([ULAW_SILENCE]) * (FRAME - 70)
    assert tail[:50] != bytes([ULAW_SILENCE]) * 50
    assert transcoder.flush() == []


def test_flush_drops_a_dangling_byte_so_the_next_turn_is_sample_aligned() -> None:
    turn = pcm(*([1000, -1000, 3000] * 320))
    after_odd_turn = OutboundTranscoder()
    after_odd_turn.process(b"\x00" * 961)
    after_odd_turn.flush()
    after_even_turn = OutboundTranscoder()
    after_even_turn.process(b"\x00" * 960)
    assert after_odd_turn.process(turn) == after_even_turn.process(turn)


def test_outbound_frames_are_the_mu_law_of_the_downsampled_pcm() -> None:
    speech, _ = load_fixture("model-greeting-24k.wav")
    frames = b"".join(OutboundTranscoder().process(speech))
    downsampled = Downsampler24kTo8k().process(speech)
    assert frames == pcm16_to_ulaw(downsampled)[: len(frames)]
    assert len(frames) == len(downsampled) // 2 // FRAME * FRAME


# --- quality on real speech -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CALLER_FIXTURES, "white-noise"])
def test_inbound_matches_an_offline_vhq_resample_above_60_db(name: str) -> None:
    """Caller mu-law -> 16 kHz: >= 60 dB telephone-band SNR and the delay it declares, no more."""
    caller = load_fixture(name)[0] if name != "white-noise" else white_noise(8000, 2.0)
    caller = ulaw_to_pcm16(pcm16_to_ulaw(caller))  # what the phone network delivers
    ours = as_float(InboundTranscoder().process(pcm16_to_ulaw(caller)))
    ideal = reference(caller, 8000, 16000)
    delay = Upsampler8kTo16k.delay_samples
    assert band_snr_db(ideal, ours, 16000, delay) >= MIN_SNR_DB
    assert abs(measured_delay(ideal, ours, 16000, max_lag=200) - delay) <= 1


@pytest.mark.parametrize(
    "name", [*MODEL_FIXTURES, "caller-librivox-0870.wav", "caller-goodbye.wav", "white-noise"]
)
def test_outbound_matches_an_offline_vhq_resample_above_60_db(name: str) -> None:
    """Model 24 kHz -> 8 kHz PCM (before mu-law): >= 60 dB telephone-band SNR at the declared delay.

    Besides the model's voice, human speech (a caller fixture brought to 24 kHz offline) and white
    noise, which puts as much energy above 4.6 kHz as below and so tests the anti-alias filter.
    """
    if name == "white-noise":
        model = white_noise(24000, 2.0)
    elif name.startswith("caller-"):
        model = resample_offline(load_fixture(name)[0], 8000, 24000)
    else:
        model = load_fixture(name)[0]
    ours = as_float(Downsampler24kTo8k().process(model))
    ideal = reference(model, 24000, 8000)
    delay = Downsampler24kTo8k.delay_samples
    assert band_snr_db(ideal, ours, 8000, delay) >= MIN_SNR_DB
    assert abs(measured_delay(ideal, ours, 8000, max_lag=100) - delay) <= 1


# --- streaming == one shot ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_inbound_in_random_chunks_equals_one_shot(seed: int) -> None:
    """No state is lost or duplicated at chunk boundaries: the output bytes are identical."""
    caller = pcm16_to_ulaw(load_fixture(CALLER_FIXTURES[seed])[0])
    one_shot = InboundTranscoder().process(caller)
    streaming = InboundTranscoder()
    chunked = b"".join(streaming.process(c) for c in random_chunks(caller, seed, largest=400))
    assert chunked == one_shot


@pytest.mark.parametrize("seed", range(4))
def test_outbound_in_random_chunks_with_odd_sizes_equals_one_shot(seed: int) -> None:
    model = load_fixture(MODEL_FIXTURES[seed % 2])[0] + white_noise(24000, 0.5)
    one_shot = outbound_all(OutboundTranscoder(), [model])
    chunks = random_chunks(model, seed, largest=3000)
    assert any(len(c) % 2 for c in chunks)
    assert outbound_all(OutboundTranscoder(), chunks) == one_shot


def test_downsampler_in_random_whole_sample_chunks_equals_one_shot() -> None:
    model = load_fixture("model-reply-24k.wav")[0]
    one_shot = Downsampler24kTo8k().process(model)
    streaming = Downsampler24kTo8k()
    chunks = random_chunks(model, 11, largest=1000, step=2)
    assert b"".join(streaming.process(c) for c in chunks) == one_shot


# --- reset ----------------------------------------------------------------------------------------


def test_inbound_after_reset_behaves_like_a_fresh_transcoder() -> None:
    first, second = (pcm16_to_ulaw(load_fixture(n)[0]) for n in CALLER_FIXTURES[:2])
    used = InboundTranscoder()
    used.process(first[:1234])
    used.reset()
    assert used.process(second) == InboundTranscoder().process(second)


def test_outbound_reset_drops_history_remainder_and_dangling_byte() -> None:
    """Barge-in: nothing of the interrupted turn leaks into the next one."""
    greeting, reply = (load_fixture(n)[0] for n in MODEL_FIXTURES)
    used = OutboundTranscoder()
    used.process(greeting[:12345])  # odd: a dangling byte, a partial frame and filter history
    used.reset()
    assert used.flush() == []
    assert outbound_all(used, [reply]) == outbound_all(OutboundTranscoder(), [reply])


# --- saturation -----------------------------------------------------------------------------------


def test_inbound_saturates_overshoot_instead_of_wrapping_around() -> None:
    """Full-scale square waves overshoot between samples; the output clips at the int16 limits."""
    caller = (b"\x80" * 6 + b"\x00" * 6) * 40  # +-32124 steps
    out = as_float(InboundTranscoder().process(caller))
    pcm8 = as_float(ulaw_to_pcm16(caller))
    upsampled = np.zeros(2 * pcm8.size)
    upsampled[::2] = pcm8
    exact = np.convolve(upsampled, UPSAMPLER_FILTER)[: out.size]
    assert out.max() == 32767
    assert out.min() == -32768
    assert np.max(np.abs(out - np.clip(np.round(exact), -32768, 32767))) <= 1.0


def test_outbound_saturates_overshoot_instead_of_wrapping_around() -> None:
    square = ([32767] * 30 + [-32768] * 30) * 20
    model = pcm(*square)
    out = as_float(Downsampler24kTo8k().process(model))
    exact = np.convolve(as_float(model), DOWNSAMPLER_FILTER)[: 3 * out.size : 3]
    assert out.max() == 32767
    assert out.min() == -32768
    assert np.max(np.abs(out - np.clip(np.round(exact), -32768, 32767))) <= 1.0


# --- bench ----------------------------------------------------------------------------------------


def test_bench_reports_microseconds_per_frame_for_both_directions() -> None:
    from agent.bench.audio import bench_transcoders

    result = bench_transcoders(seconds=0.1)
    assert set(result) == {"inbound", "outbound"}
    assert all(0.0 < us < 20_000.0 for us in result.values())  # well under a 20 ms frame


def test_inbound_accepts_already_decoded_pcm_with_the_same_result() -> None:
    ulaw = bytes(range(256)) * 3
    assert InboundTranscoder().process_pcm16(ulaw_to_pcm16(ulaw)) == InboundTranscoder().process(
        ulaw
    )
