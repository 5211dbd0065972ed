"""Networks (flax.linen): encoders, fusion, the CAD head and LoRA.

Modules: :mod:`.layers` (shared blocks), :mod:`.visual` (mouth ResNet / face ViT),
:mod:`.lips` (lip-landmark encoder), :mod:`.audio` (SE-ResNet / Whisper-like),
:mod:`.fusion` (TalkNet cross-attention, concatenation), :mod:`.detector` (two-stream
shell), :mod:`.cad` (CAD head), :mod:`.lora` (low-rank adapters), :mod:`.encoders`
(registry built from configs). Import names from the module that defines them: this
package re-exports nothing.
"""
