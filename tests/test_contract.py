from avdetect import contract


def test_rates_are_consistent():
    assert contract.SAMPLES_PER_FRAME == 640
    assert contract.MEL_PER_FRAME == 4
    assert contract.MEL_WIN == 0.025 * contract.AUDIO_SR
    assert contract.MEL_HOP == 0.010 * contract.AUDIO_SR


def test_category_of():
    assert contract.category_of(False, False) == "RVRA"
    assert contract.category_of(False, True) == "RVFA"
    assert contract.category_of(True, False) == "FVRA"
    assert contract.category_of(True, True) == "FVFA"
