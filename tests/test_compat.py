from sedlib._compat import import_torchvision


def test_torchvision_and_timm_import_and_build_a_deit3():
    torchvision = import_torchvision()
    assert import_torchvision() is torchvision  # a second call changes nothing
    import timm

    model = timm.create_model("deit3_base_patch16_224", pretrained=False)
    assert model.embed_dim == 768 and len(model.blocks) == 12
