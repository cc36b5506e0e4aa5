"""The card-data scanner the suite runs over its own logs must actually find card data."""

from tests.cardscan import problems


def test_finds_full_pan_cvv_and_track_data():
    assert problems('{"pan": "4111111111111111"}') == ["full PAN"]
    assert problems('{"cvv": "123"}') == ["CVV"]
    assert problems("fields={'48': '123'}") == ["CVV"]
    assert "track data" in problems(";4111111111111111=30121010000000000")


def test_finds_pans_written_in_groups():
    assert problems('{"order_id": "4012 8888 8888 1881"}') == ["full PAN"]
    assert problems('{"order_id": "4012-8888-8888-1881"}') == ["full PAN"]
    assert problems('{"merchant": "x 3782-822463-10005"}') == ["full PAN"]
    assert problems('{"id": 4012888888881881}') == ["full PAN"]


def test_masked_values_and_ordinary_numbers_pass():
    assert problems('{"masked_pan": "411111******1111", "48": "[3 masked]", "rrn": "632742909087"}') == []
    assert problems('{"amount": "000000001250", "90": "020043358911231202380000040000100000000000"}') == []
