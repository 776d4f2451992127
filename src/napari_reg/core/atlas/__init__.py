"""Atlas work built on registration: label propagation, label fusion, templates.

* ``labels.py``    Atlas (image + labels), label propagation through a transform,
                   the modality check (does the metric suit the pair?)
* ``fusion.py``    multi-atlas segmentation: majority and locally weighted voting
* ``template.py``  unbiased groupwise template construction

Label overlap (Dice) is a quality measure: :func:`napari_reg.core.qc.dice_per_label`.
"""
