"""False-negative mining from a warm-up CSL encoder: embeddings, candidate algorithms, pair quality.

`pipeline.mine` is the stage's command line; these modules hold its parts:
  embeddings  the training set as unit vectors (one per sample) and as augmented support views;
  algorithms  k-means pseudo-labels and the neighbour tables (kNN, threshold, FNC support views);
  quality     pair precision / recall of labels or neighbour tables against the true labels.
"""
