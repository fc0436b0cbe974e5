"""ComCNN/RecCNN (Jiang et al., TCSVT 2017): networks, weights file, alternating training."""
