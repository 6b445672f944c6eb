"""placeholder"""
def moments_cover(models, method):
    return False
